"""Secret references in the catalog, without any secret store (the fetches: integration/test_secrets_aws.py)."""

from __future__ import annotations

import pytest

from snapshot_platform.catalog import CatalogError, parse_catalog
from snapshot_platform.secrets import AwsSecretRef


def test_catalog_accepts_references_and_rejects_malformed_ones() -> None:
    base = {"snapshots": {}}
    ok = parse_catalog({**base, "sources": {"db": {
        "kind": "mysql", "url": {"env": "DB_URL"},
        "password": {"aws_secret": "prod/mysql", "key": "password", "region": "eu-west-1"}}}})
    assert isinstance(ok.sources["db"].password, AwsSecretRef)
    with pytest.raises(CatalogError) as info:
        parse_catalog({**base, "sources": {"db": {
            "kind": "mysql", "url": {"env": "DB_URL"}, "password": {"aws_secret": "prod/mysql", "kee": "x"}}}})
    assert "sources.db" in str(info.value) and "password" in str(info.value)
    # a password is never a literal: only a reference
    with pytest.raises(CatalogError, match="password"):
        parse_catalog({**base, "sources": {"db": {"kind": "mysql", "url": {"env": "DB_URL"}, "password": "literal"}}})
    with pytest.raises(CatalogError, match="literal password"):
        parse_catalog({**base, "sources": {"db": {"kind": "mysql", "url": "mysql://u:pw@h/db"}}})
