"""Provenance: which code, files and data produced a run, and the journal that tells it.

- :mod:`mlbook.provenance.git` — before/after snapshots of the code as git commits
  (hidden refs or real commits), checkout of a snapshot, diffs between commits.
- :mod:`mlbook.provenance.files` — the project files a run used (with sha256) and the
  versions of the packages it imported.
- :mod:`mlbook.provenance.data` — the content hash of a dataset DVC does not track.
- :mod:`mlbook.provenance.dvc` — DVC's files and hash state, read natively.
- :mod:`mlbook.provenance.datahash` — DVC's md5 of a file or directory, computed natively, cached.
- :mod:`mlbook.provenance.datasets` — the datasets a run uses: clean, modified, missing.
- :mod:`mlbook.provenance.lineage` — data-processing steps (``mlbook data process``) and lineage.
- :mod:`mlbook.provenance.restore` — bring back the data a past run used.
- :mod:`mlbook.provenance.journal` — ``EXPERIMENT_LOG.md``: entries, steps, status, notes.
- :mod:`mlbook.provenance.diff` — a structured diff of two runs (params, data, metrics, code).
- :mod:`mlbook.provenance.stale` — which recorded files changed since a run.
- :mod:`mlbook.provenance.observer` — the runner hooks that tie it all to each run.

Each module is imported on its own; this package imports nothing.
"""
