"""JSON Schema of ``dataset.json`` and of one record, generated from the code.

The checked-in copies live in ``schemas/`` (a test keeps them equal to these); refresh
them with ``python -m mlbook.datasets.schema schemas``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from mlbook._fs import atomic_write_bytes
from mlbook.datasets.metadata import SCHEMA_VERSION, _LooseInfo, _LooseRecord

__all__ = ["SCHEMA_FILES", "generate_schemas", "write_schemas"]

SCHEMA_FILES = {
    "dataset.schema.json": "dataset.json: a dataset's name, source, licence and classes",
    "record.schema.json": "one line of records.jsonl (or one item of records.json)",
}


def _schema(kind: type[Any], file_name: str, title: str) -> dict[str, Any]:
    schema = msgspec.json.schema(kind)
    if kind is _LooseRecord:  # publish the input form under the name users know
        definition = schema["$defs"].pop("_LooseRecord")
        definition["title"] = "Record"
        definition["description"] = (
            "One image (`file`) or sample of numbers (`features`: a list, or a table row) "
            "and what is in it; give `file`, `features` or both. Input accepts `labels` as a "
            "string or a list and `counts` as an object or a list of one-key objects; "
            "mlbook writes lists and objects."
        )
        schema["$defs"]["Record"] = definition
        schema["$ref"] = "#/$defs/Record"
    if kind is _LooseInfo:
        definition = schema["$defs"].pop("_LooseInfo")
        definition["title"] = "DatasetInfo"
        definition["description"] = (
            "What the dataset is and its class encoding. `classes` may be plain names "
            "(ids 0, 1, 2... in order) or objects with their ids; `name` defaults to the "
            "directory's name."
        )
        schema["$defs"]["DatasetInfo"] = definition
        schema["$ref"] = "#/$defs/DatasetInfo"
    body = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://mlbook.dev/schemas/v{SCHEMA_VERSION}/{file_name}",
        "title": title,
        "description": SCHEMA_FILES[file_name],
    }
    body.update(schema)
    return body


def generate_schemas() -> dict[str, bytes]:
    """File name -> schema JSON (formatted, newline at the end)."""
    schemas = {
        "dataset.schema.json": _schema(_LooseInfo, "dataset.schema.json", "mlbook dataset"),
        "record.schema.json": _schema(_LooseRecord, "record.schema.json", "mlbook record"),
    }
    return {
        name: msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"
        for name, schema in schemas.items()
    }


def write_schemas(directory: Path | str) -> list[Path]:
    """Write the schemas into ``directory`` (atomically); return their paths."""
    written = []
    for name, data in generate_schemas().items():
        path = Path(directory) / name
        atomic_write_bytes(path, data)
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover
    for written_path in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "schemas"):
        print(written_path)
