"""A PostgreSQL driver that does not say each column's type is refused before a row is read.

ADBC's PostgreSQL driver reports every result column's type (``POSTGRESQL:type``) and typmod only
since 1.13.0. With an earlier one the transfer plan would not know an integer or a date column and
would send it as text: the snapshot's types silently changed. The schemas below are what the drivers
report for ``SELECT l_orderkey, l_quantity, l_shipdate FROM lineitem`` (l_quantity NUMERIC(15,2)).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from snapshot_platform.sources.base import SourceError
from snapshot_platform.sources.postgres_types import require_column_types, transfer_plan

_NUMERIC_1_12 = pa.opaque(pa.string(), type_name="numeric", vendor_name="PostgreSQL")

# adbc-driver-postgresql 1.12.0: metadata only on the types it does not decode itself
BEFORE_1_13 = pa.schema([
    pa.field("l_orderkey", pa.int64()),
    pa.field("l_quantity", _NUMERIC_1_12, metadata={"ADBC:postgresql:typname": "numeric"}),
    pa.field("l_shipdate", pa.date32()),
])

# 1.13.0: every column's type; NUMERIC's typmod ((15 << 16 | 2) + 4)
SINCE_1_13 = pa.schema([
    pa.field("l_orderkey", pa.int64(), metadata={"POSTGRESQL:type": "int8"}),
    pa.field("l_quantity", _NUMERIC_1_12,
             metadata={"POSTGRESQL:type": "numeric", "POSTGRESQL:typmod": str((15 << 16 | 2) + 4)}),
    pa.field("l_shipdate", pa.date32(), metadata={"POSTGRESQL:type": "date"}),
])


def test_a_driver_without_column_types_is_refused_naming_the_column_and_the_release():
    with pytest.raises(SourceError) as raised:
        require_column_types(BEFORE_1_13, "warehouse")
    text = str(raised.value)
    assert text.startswith("source warehouse: the installed ADBC PostgreSQL driver")
    assert "column 'l_orderkey'" in text and "adbc-driver-postgresql 1.13 or later" in text
    assert raised.value.code == "driver" and not raised.value.transient
    # what the refusal prevents: without the types, every column would have become text
    assert set(transfer_plan(BEFORE_1_13).schema.types) == {pa.string()}


def test_a_driver_with_column_types_passes_and_keeps_them():
    require_column_types(SINCE_1_13, "warehouse")
    assert transfer_plan(SINCE_1_13).schema.types == [pa.int64(), pa.decimal128(15, 2), pa.date32()]
