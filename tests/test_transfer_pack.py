"""Pack and unpack between two clones of one project: real runs, real git, real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from transfer_helpers import Clones, add_experiment, git, make_clones, run, snapshot_of

from mlbook.experiments.query import get_run, metric_series, run_artifacts
from mlbook.provenance.journal import read_journal
from mlbook.transfer.pack import pack_runs
from mlbook.transfer.unpack import unpack


@pytest.fixture
def clones(tmp_path: Path) -> Clones:
    return make_clones(tmp_path)


def test_pack_unpack_both_ways(clones: Clones, tmp_path: Path) -> None:
    a, b = clones.a, clones.b
    ran_a = run(a, "E001")
    add_experiment(b, "E002", "second")
    ran_b = run(b, "E002")

    to_b = tmp_path / "a.mlbook"
    packed = pack_runs(a, output=to_b)
    assert sorted(packed.runs) == sorted(ran_a)
    assert packed.refs == 4
    first = unpack(b, to_b, trust=True)
    assert sorted(first.added) == sorted(ran_a) and first.present == []
    assert first.refs == 4 and first.outputs == 6  # result.txt, big.bin, output.log each

    to_a = tmp_path / "b.mlbook"
    pack_runs(b, output=to_a)
    back = unpack(a, to_a, trust=True)
    assert sorted(back.added) == sorted(ran_b)
    assert sorted(back.present) == sorted(ran_a)

    assert snapshot_of(a) == snapshot_of(b)
    assert len(snapshot_of(a)) == 4
    again = unpack(b, to_b, trust=True)
    assert again.added == [] and sorted(again.present) == sorted(ran_a)

    # commits, outputs, artifacts and the journal came along
    run_id = ran_a[0]
    record = get_run(b, run_id)
    after = git(b.root, "rev-parse", f"refs/mlbook/runs/{run_id}/after").strip()
    assert after == record.commit_after
    assert (b.root / record.outputs / "result.txt").read_text().startswith("k ")
    assert run_artifacts(b, run_id) == run_artifacts(a, run_id)
    steps = {s.run_id for e in read_journal(b.journal_path) if e.id == "E001" for s in e.steps}
    assert set(ran_a) <= steps
    assert metric_series(b, run_id) == metric_series(a, run_id)
