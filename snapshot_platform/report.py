"""The base of the typed reports (the snapshot diff, the comparison and the reproduction of training
runs): frozen dataclasses whose JSON is written in one place.

A report's JSON object has its fields' names as keys, in the order the fields are declared; nested
reports become objects, tuples become arrays, mappings become objects. :meth:`Report.to_json` is
the text the CLI prints for ``--json``. Imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Mapping


def json_data(value: Any) -> Any:
    """``value`` as JSON data: reports as objects, tuples and lists as arrays, mappings as objects."""
    if isinstance(value, Report):
        return value.as_dict()
    if isinstance(value, (tuple, list)):
        return [json_data(v) for v in value]
    if isinstance(value, Mapping):
        return {k: json_data(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Report:
    """A frozen report; subclasses declare their fields in the order of their JSON keys."""

    def as_dict(self) -> dict[str, Any]:
        """The one writer: the report as a JSON object (keys in field order)."""
        return {f.name: json_data(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        """The ``--json`` text: indented, anything not JSON-native as its text."""
        return json.dumps(self.as_dict(), indent=2, default=str)
