"""`<run>/config.json`: every option the run was asked for, resolved (after the data's defaults), so that
`edgekd distill --config RUN/config.json` replays it.

`RunConfig` is built from `edgekd.options` (one field per DistillConfig option, with the option's help as
its description), plus `data_info` and `schema_version`. `write_config` and `load_config` are the only code
that writes or reads the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgekd import options as opts
from edgekd.run.schema import Record, extra_field, field, read, version_field, write

# Options whose value in the file is not the command line's one-value type.
_DICTS = ("loss_options", "student_taps", "teacher_taps")  # {LOSS: {KEY: value}} / {ROLE: MODULE}
# a name or a list of names; a string or a list of indices; [H, W], N or null
_ANY = ("teacher", "class_order", "input_size", "teacher_input_size")


def _hint(o: opts.Option) -> Any:
    if o.name in _ANY:
        return Any
    kind = dict if o.name in _DICTS else list if o.repeatable else {Path: str}.get(o.type, o.type)
    return kind | None if o.default is None or o.name in _DICTS else kind


def _fields() -> list[tuple[str, Any, Any]]:
    table = opts.for_command(opts.DISTILL)
    return [("data_info", dict, field("the data as the run read it: shape, labels, preprocessing, the split")),
            *[(name, _hint(table[name]), field(f"`{table[name].cli_flag}`: {table[name].help}"))
              for name in opts.config_fields()],
            ("schema_version", int | None, version_field()),
            ("extra", dict[str, Any], extra_field())]


RunConfig = dataclasses.make_dataclass("RunConfig", _fields(), bases=(Record,), frozen=True)
RunConfig.__module__ = __name__
RunConfig.__doc__ = """`<run>/config.json`, written by `edgekd distill` (and select-student for its pick) before
training starts: every DistillConfig option as the run resolved it (options left to follow the data hold the
values the data gave them), and the data as read. `edgekd distill --config RUN/config.json` replays the run;
`run`, `resume` and `progress` are where and how it ran, not what, and a replay takes them from its own
command line. select-student adds `student_net` and `select_student` (kept in `extra`)."""


def recipe(config: Any) -> dict[str, Any]:
    """The experiment a RunConfig holds, as API keywords: every option but run-level ones (run, resume, progress)."""
    keys = opts.recipe_keys(opts.DISTILL)
    return {name: getattr(config, name) for name in opts.config_fields() if name in keys}


def load_config(path: str | Path) -> Any:
    """Read and check a config.json; BadInput names the file and the field that is missing or mistyped."""
    return read(RunConfig, path)


def write_config(path: str | Path, options: dict[str, Any], data_info: dict[str, Any], **extra: Any) -> Any:
    """Check `options` (DistillConfig as a dict) against the contract, stamp the version and write atomically."""
    return write(RunConfig, path, {**options, "data_info": data_info, **extra})
