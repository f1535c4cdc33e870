"""The run folder as a typed contract: one frozen dataclass per file, each with a `schema_version`.

`schema` (the shared machinery) · `manifest` (manifest.json; `amend`, its one writer) · `bench` (bench.json)
· `config` (config.json) · `distill` (distill.json) · `metrics` (metrics.jsonl lines)
· `verify` (`edgekd verify`: hashes what each manifest names) · `docs` (docs/run-folder.md, generated from the
dataclasses). It is the only code that reads or writes these files (tests/test_run_readers.py). Imports only the
standard library and `edgekd.errors` / `edgekd.checks` / `edgekd.artifacts`, so every stage can use it.
"""
