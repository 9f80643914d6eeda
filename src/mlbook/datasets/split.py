"""Deterministic split assignment by seed and ratios, stratified by label when asked."""

from __future__ import annotations

import random
from collections import Counter

import msgspec

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.metadata import Record
from mlbook.errors import DatasetError

__all__ = ["assign_splits", "parse_ratios"]


def parse_ratios(text: str) -> dict[str, float]:
    """Parse ``train=0.8,val=0.1,test=0.1``, or weights like ``train=8,val=1,test=1``.

    Whole-number weights are normalised; fractions (any value with a decimal part)
    must add up to 1.

    Raises:
        DatasetError: a malformed or non-positive ratio, or fractions not adding up to 1.
    """
    ratios: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not name.strip() or number <= 0:
            raise DatasetError(
                f"bad split ratio {part.strip()!r}; write them like train=0.8,val=0.1,test=0.1"
            )
        ratios[name.strip()] = number
    total = sum(ratios.values())
    fractions = any(not float(value).is_integer() for value in ratios.values())
    if fractions and abs(total - 1) > 1e-6:
        raise DatasetError(
            f"split fractions {text!r} add up to {total:g}, not 1; fix them, or give "
            "whole-number weights like train=8,val=1,test=1"
        )
    return ratios


def _strata_key(record: Record) -> str:
    """The label a record is stratified by: its first label, else its most common box class."""
    if record.labels:
        return record.labels[0]
    if record.boxes:
        return Counter(b.name for b in record.boxes).most_common(1)[0][0]
    if record.counts:
        return max(record.counts, key=lambda k: record.counts[k])
    return ""


def _allocate(count: int, ratios: dict[str, float]) -> list[str]:
    """Split names for ``count`` items, proportional to ``ratios`` (largest remainder)."""
    total = sum(ratios.values())
    exact = {name: count * weight / total for name, weight in ratios.items()}
    sizes = {name: int(value) for name, value in exact.items()}
    left = count - sum(sizes.values())
    for name in sorted(exact, key=lambda n: exact[n] - sizes[n], reverse=True)[:left]:
        sizes[name] += 1
    return [name for name in ratios for _ in range(sizes[name])]


def assign_splits(
    dataset: Dataset,
    ratios: dict[str, float],
    seed: int = 0,
    stratify: bool = False,
    keep_existing: bool = False,
) -> Dataset:
    """A copy of ``dataset`` with each record's ``split`` set.

    The same records, ratios and seed always give the same assignment (records are
    ordered by id before shuffling, so their order in the file does not matter).

    Args:
        ratios: split name -> weight (normalised).
        stratify: keep each label's proportions in every split (by the record's first
            label, else its most common box class).
        keep_existing: leave records that already have a split alone.

    Raises:
        DatasetError: no ratios.
    """
    if not ratios or any(v <= 0 for v in ratios.values()):
        raise DatasetError("give at least one split with a positive ratio, e.g. train=0.8")
    records = list(dataset)
    todo = [i for i, r in enumerate(records) if not (keep_existing and r.split is not None)]
    todo.sort(key=lambda i: records[i].id)
    groups: dict[str, list[int]] = {}
    for index in todo:
        key = _strata_key(records[index]) if stratify else ""
        groups.setdefault(key, []).append(index)
    rng = random.Random(seed)
    assigned: dict[int, str] = {}
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        for index, name in zip(members, _allocate(len(members), ratios), strict=True):
            assigned[index] = name
    updated = [
        msgspec.structs.replace(r, split=assigned[i]) if i in assigned else r
        for i, r in enumerate(records)
    ]
    return Dataset(dataset.info, updated, dataset.root)
