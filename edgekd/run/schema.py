"""The machinery every run-folder file shares: typed fields, `extra`, the schema version, one-line errors.

A file is a frozen dataclass. Its typed fields are what other tools read; every other key it holds goes to
`extra`, so `from_json(d).to_json() == d` for any file that today's (or an older) edgekd wrote. A file
without `schema_version` is schema 0 (written before the contract existed) and is read where its fields
exist; any other version than `SCHEMA_VERSION` is bad input, as is a missing field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from edgekd.errors import BadInput

SCHEMA_VERSION = 1  # the version this edgekd writes and reads (0 = files written before it existed)
LEGACY_VERSION = 0
T = TypeVar("T", bound="Record")


def field(doc: str, *, optional: bool = False, default: Any = None) -> Any:
    """A typed field with its one-line description (docs/run-folder.md). `optional`: the key may be absent
    (it is omitted again on writing); otherwise it is required, though its value may be null where typed so."""
    meta = {"doc": doc, "optional": optional}
    if optional:
        return dataclasses.field(default=default, metadata=meta)
    return dataclasses.field(metadata=meta)


def version_field() -> Any:
    """`schema_version`, the same on every top-level file: optional, so files from before it still load."""
    return field(f"{SCHEMA_VERSION}; absent in files written before it (read as {LEGACY_VERSION})", optional=True)


def extra_field() -> Any:
    return dataclasses.field(default_factory=dict, metadata={"doc": "every other key, kept as written"})


class Record:
    """Base of every typed object: `from_json` / `to_json`, with `extra` for keys it does not type."""

    extra: dict[str, Any]

    @classmethod
    def from_json(cls: type[T], obj: Any, *, source: str | Path = "<memory>", where: str = "",
                  version: int = SCHEMA_VERSION) -> T:
        if not isinstance(obj, dict):
            raise _error(source, where or "(top level)", "is not a JSON object", version)
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            name = f"{where}.{f.name}" if where else f.name
            if f.name not in obj and not f.metadata.get("optional"):
                raise _error(source, name, "missing", version)
            if obj.get(f.name) is None and f.metadata.get("optional"):
                continue  # absent, or null: None here; a null stays in `extra`, so it is written back
            values[f.name] = _convert(hints[f.name], obj[f.name], source=source, where=name, version=version)
        extra = {k: v for k, v in obj.items() if k not in values}
        return cls(**values, extra=extra)  # type: ignore[call-arg]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name] = _dump(value)
        return {**out, **self.extra}


def _error(source: str | Path, name: str, what: str, version: int) -> BadInput:
    return BadInput(f"file {source}: field '{name}' {what}; written by schema {version}, "
                    f"this edgekd reads {SCHEMA_VERSION}")


def _convert(hint: Any, value: Any, *, source: str | Path, where: str, version: int) -> Any:
    """Build nested records (also inside `X | None` and `dict[str, X]`); check the plain scalar types."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_json(value, source=source, where=where, version=version)
    if typing.get_origin(hint) is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], Record):
        if not isinstance(value, dict):
            raise _error(source, where, "is not a JSON object", version)
        return {k: args[1].from_json(v, source=source, where=f"{where}.{k}", version=version) for k, v in value.items()}
    expected = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list,), dict: (dict,)}
    kinds = expected.get(typing.get_origin(hint) or hint)
    if kinds and (not isinstance(value, kinds) or (hint is not bool and isinstance(value, bool))):
        raise _error(source, where, f"is {type(value).__name__}, not {getattr(hint, '__name__', hint)}", version)
    return value


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def version_of(obj: Any, source: str | Path) -> int:
    """The file's schema version: 0 when absent (an older edgekd), else it must be this edgekd's."""
    if not isinstance(obj, dict):
        raise BadInput(f"file {source}: expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", LEGACY_VERSION)
    if version not in (LEGACY_VERSION, SCHEMA_VERSION):
        raise BadInput(f"file {source}: field 'schema_version' is {version!r}; this edgekd reads "
                       f"{SCHEMA_VERSION} (or {LEGACY_VERSION}: files without it)")
    return int(version)


def parse(cls: type[T], obj: Any, source: str | Path) -> T:
    """A whole file: its version checked first, so a missing field names the version that wrote it."""
    return cls.from_json(obj, source=source, version=version_of(obj, source))


def plain(obj: Any) -> Any:
    """`obj` as JSON gives it back (numpy scalars and paths made plain), so what is checked is what is written."""
    import json

    from edgekd.artifacts import _jsonable

    return json.loads(json.dumps(obj, default=_jsonable))


def read(cls: type[T], path: str | Path) -> T:
    from edgekd.artifacts import read_json

    return parse(cls, read_json(path), path)


def write(cls: type[T], path: str | Path, data: dict[str, Any]) -> T:
    """Check `data` against `cls`, stamp this edgekd's schema version and write it atomically."""
    from edgekd.artifacts import write_json

    typed = parse(cls, {**plain(data), "schema_version": SCHEMA_VERSION}, path)
    write_json(path, typed.to_json())
    return typed
