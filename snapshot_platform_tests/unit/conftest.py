"""Unit tests run without any server or emulator (`make test-unit`): a unit test that asks for one,
directly or through another fixture (pg_database, mysql_database, aws_env ...), fails at once."""

from __future__ import annotations

import pytest

SERVER_FIXTURES = ("pg_server", "mysql_server", "moto_server", "fakesnow_server", "bigquery_emulator")


def _refuse(name: str):
    @pytest.fixture(scope="session", name=name)
    def fixture() -> None:
        pytest.fail(f"unit tests run without servers, but this one uses the {name} fixture: "
                    "move it to snapshot_platform_tests/engines/ or integration/", pytrace=False)
    return fixture


for _name in SERVER_FIXTURES:
    globals()[f"_refuse_{_name}"] = _refuse(_name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/unit/" in item.nodeid and item.get_closest_marker("slow"):
            raise pytest.UsageError(f"{item.nodeid}: a unit test is never slow; move it to integration/")
