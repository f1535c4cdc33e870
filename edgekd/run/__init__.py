"""The run folder as a typed contract: one frozen dataclass per file, each with a `schema_version`.

`schema` (the shared machinery) · `manifest` (manifest.json; `amend`, its one writer) · `bench` (bench.json)
· `config` (config.json) · `distill` (distill.json) · `metrics` (metrics.jsonl lines)
· `docs` (docs/run-folder.md, generated from the dataclasses). Imports only the standard library and
`edgekd.errors` / `edgekd.artifacts`, so every stage can use it.
"""
