"""The checked-in JSON Schemas equal the ones generated from the code."""

from __future__ import annotations

import json
from pathlib import Path

from mlbook.datasets.schema import generate_schemas

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def test_checked_in_schemas_are_current() -> None:
    for name, data in generate_schemas().items():
        assert (SCHEMAS / name).read_bytes() == data, (
            f"schemas/{name} is stale; run `python -m mlbook.datasets.schema schemas`"
        )


def test_record_schema_accepts_the_loose_forms() -> None:
    schema = json.loads(generate_schemas()["record.schema.json"])
    record = schema["$defs"]["Record"]
    assert record["required"] == ["id"]  # and `file` or `features`: checked by validate
    assert "features" in record["properties"] and "TableRef" in schema["$defs"]
    assert record["additionalProperties"] is False
    labels = record["properties"]["labels"]["anyOf"]
    assert {"type": "string"} in labels
    assert "Box" in schema["$defs"]


def test_dataset_schema_accepts_class_names() -> None:
    schema = json.loads(generate_schemas()["dataset.schema.json"])
    info = schema["$defs"]["DatasetInfo"]
    assert not info.get("required")  # even `name` may be left out
    items = info["properties"]["classes"]["items"]["anyOf"]
    assert {"type": "string"} in items and {"$ref": "#/$defs/ClassInfo"} in items
