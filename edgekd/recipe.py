"""`--config FILE`: a recipe (TOML) or a run's config.json, read against `edgekd.options` as API keywords.

A recipe holds the experiment, as torchdistill's do; the command line holds the run-level flags (`--run`,
`--resume`, `--json`...) and any option it gives wins over the recipe. Keys are the options' names as the
API spells them (`epochs`, `labeled_fraction`, `methods`); repeatable options are lists (a single value is
taken as a list of one); `loss_options`, `student_taps` and `teacher_taps` are tables:

    data = "digits"
    epochs = 5
    methods = ["soft:0.7", "fitnet:0.3"]
    [loss_options.fitnet]
    kernel = 3

A `.json` file (or a run folder) is a run's config.json (`edgekd.run.config`): its resolved options replay
the run. An unknown key, a wrong type or a value outside the option's range is BadInput naming the file and the key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from edgekd import options as opts
from edgekd.errors import BadInput

_SIZES = ("input_size", "teacher_input_size")            # N, "HxW" or [H, W]
_TABLES = ("loss_options", "student_taps", "teacher_taps")
_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", Path: "a path (string)"}


def read_recipe(path: str | Path, command: str) -> dict[str, Any]:
    """The options the file sets for `command`, as API keywords, each checked (type, range, choices)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return _from_run_config(path / "config.json", command)  # a run folder: its config.json
    if path.suffix == ".json":
        return _from_run_config(path, command)
    import tomllib

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"file {path}: not found (--config takes a .toml recipe or a run's config.json)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"file {path}: cannot read it ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"file {path}: not valid TOML ({e})") from None
    return {key: value_of(path, command, key, value) for key, value in raw.items()}


def _from_run_config(path: Path, command: str) -> dict[str, Any]:
    """A run's config.json: the options that `command` takes with distill's meaning (the same declaration:
    compare takes the run's data, teacher, student and budget, not its --method, which names compare's rows),
    each checked as a recipe's would be."""
    from edgekd.run.config import load_config, recipe

    keys, distill = opts.recipe_keys(command), opts.recipe_keys(opts.DISTILL)
    return {k: value_of(path, command, k, v) for k, v in recipe(load_config(path)).items()
            if keys.get(k) is distill[k]}


def value_of(path: Path, command: str, key: str, value: Any) -> Any:
    """One recipe entry as the API keyword takes it; BadInput names the file, the key and what is valid."""
    keys = opts.recipe_keys(command)
    opt = keys.get(key)
    if opt is None:
        near = difflib.get_close_matches(key, list(keys), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        level = "set on the command line, not in a recipe; " if key in opts.for_command(command) else ""
        raise BadInput(f"file {path}: key '{key}' is not an option of {command}; {level}{hint}"
                       f"valid keys: {', '.join(keys)}")
    out = _typed(path, opt, value)
    for item in out if opt.repeatable and isinstance(out, list) else [out]:
        why = opts.problem(opt, item)
        if why:
            raise BadInput(f"file {path}: key '{key}' {item!r}: {why}")
    return out


def _typed(path: Path, opt: opts.Option, value: Any) -> Any:
    if value is None and (opt.default is None or opt.repeatable or opt.name in _SIZES):
        return None  # config.json's null: left unset, as the command line leaves it
    if opt.name in _TABLES:
        inner = dict if opt.name == "loss_options" else str
        if isinstance(value, dict) and all(isinstance(v, inner) for v in value.values()):
            return value
        what = "a table of tables ([loss_options.fitnet] kernel = 3)" if inner is dict else "a table of ROLE = MODULE"
        raise _wrong(path, opt, value, what)
    if opt.name in _SIZES and (_is(value, int) or _is(value, str) or _pair(value)):
        return value
    if opt.name == "class_order" and (_is(value, str) or isinstance(value, list) and all(_is(v, int) for v in value)):
        return value
    if opt.repeatable:
        items = value if isinstance(value, list) else [value]
        if all(_is(v, opt.type) for v in items):
            return [str(v) if opt.type is Path else v for v in items]
        raise _wrong(path, opt, value, f"a list of {_NAMES[opt.type].split(' ', 1)[1]}s")
    if _is(value, opt.type):
        return str(value) if opt.type is Path else value
    sizes = ", an integer N or [H, W]" if opt.name in _SIZES else ""
    raise _wrong(path, opt, value, _NAMES[opt.type] + sizes)


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str if kind is Path else kind)


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is(v, int) for v in value)


def _wrong(path: Path, opt: opts.Option, value: Any, expected: str) -> BadInput:
    return BadInput(f"file {path}: key '{opt.name}' is {type(value).__name__} {value!r}; expected {expected}")


def merge(command: str, given: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """The API's rule: a keyword still at its default takes the recipe's value; one given otherwise wins."""
    table = opts.for_command(command)
    return {**given, **{k: v for k, v in recipe.items()
                        if k in given and opts.same_default(table[k], given[k], table[k].default)}}
