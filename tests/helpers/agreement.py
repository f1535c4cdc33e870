"""Does a command, its API function and DistillConfig agree with `edgekd.options`? One list of lines naming
each disagreement (empty: they agree). tests/test_options.py runs it on the real ones and on perturbed copies."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable

from edgekd import defaults
from edgekd.options import FROM_DATA, Option, same_default


def _element(annotation: Any) -> Any:
    """The type of one value: `int` of Optional[int], `str` of Optional[List[str]]."""
    while typing.get_args(annotation):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def cli_disagreements(command: str, table: dict[str, Option], click_command: Any) -> list[str]:
    """Every table entry is a flag of the command with its default, help, type and repetition; nothing more."""
    params = {flag: p for p in click_command.params for flag in p.opts}
    out, seen = [], set()
    for o in table.values():
        p = params.get(o.cli_flag)
        if p is None:
            out.append(f"{command}: {o.cli_flag} ({o.name}) is in the table, not on the command")
            continue
        seen.add(p.name)
        if p.required != o.required:
            out.append(f"{command} {o.cli_flag}: required {p.required} on the command, {o.required} in the table")
        if not o.required and not same_default(o, p.default, o.default):
            out.append(f"{command} {o.cli_flag}: default {p.default!r} on the command, {o.default!r} in the table")
        if p.help != o.help:
            out.append(f"{command} {o.cli_flag}: help differs from the table's")
        if bool(p.multiple) != o.repeatable:
            out.append(f"{command} {o.cli_flag}: repeatable {bool(p.multiple)} on the command, {o.repeatable} in "
                       f"the table")
        kind = _element(p.type_descriptor.annotation)
        if kind is not o.type:
            out.append(f"{command} {o.cli_flag}: type {kind.__name__} on the command, {o.type.__name__} in the table")
    out += [f"{command}: {p.opts[0]} is on the command, not in the table" for p in click_command.params
            if p.name not in seen]
    return out


def api_disagreements(command: str, table: dict[str, Option], function: Callable) -> list[str]:
    """The API function's keywords are the table's options but the CLI-only ones, with the same defaults."""
    sig = inspect.signature(function).parameters
    want = {n: o for n, o in table.items() if o.level != "cli"}
    out = [f"{command}: keyword {n} is in the table, not in {function.__name__}()" for n in want if n not in sig]
    out += [f"{command}: keyword {n} of {function.__name__}() is not in the table" for n in sig if n not in want]
    for name in set(want) & set(sig):
        o, default = want[name], sig[name].default
        if (default is inspect.Parameter.empty) != o.required:
            out.append(f"{command}: keyword {name} required {default is inspect.Parameter.empty} in "
                       f"{function.__name__}(), {o.required} in the table")
        elif not o.required and not same_default(o, default, o.default):
            out.append(f"{command}: keyword {name} default {default!r} in {function.__name__}(), {o.default!r} "
                       f"in the table")
    return out


def config_disagreements(table: dict[str, Option], fields: tuple[str, ...], config_cls: type) -> list[str]:
    """DistillConfig's fields are `fields` (the table's config fields), with the table's defaults; the options
    that follow the data are None in the table and hold the digits value (`defaults.<NAME>`) in DistillConfig."""
    have = {f.name: f for f in dataclasses.fields(config_cls)}
    out = [f"config: field {n} is in the table, not in {config_cls.__name__}" for n in fields if n not in have]
    out += [f"config: field {n} of {config_cls.__name__} is not in the table" for n in have if n not in fields]
    for name in set(fields) & set(have):
        f, o = have[name], table[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        want = getattr(defaults, name.upper()) if name in FROM_DATA and o.default is None else o.default
        if not same_default(o, default, want):
            out.append(f"config: field {name} default {default!r} in {config_cls.__name__}, {want!r} from the table")
    return out
