"""edgekd.deploy.targets: every shipped profile loads; every kind of bad profile is BadInput (exit 2)
naming the file and the key; arbitrary TOML never escapes as anything but BadInput."""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekd.deploy import targets as T
from edgekd.deploy.targets import list_targets, load_target, targets_dir
from edgekd.errors import BadInput

BASE = (T.defaults.TARGETS_DIR / "cpu-arm.toml").read_text(encoding="utf-8")


def write(folder: Path, text: str, name: str = "board.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str, text: str = BASE) -> str:
    """`text` with `old` replaced once; fails loudly if cpu-arm.toml changed under the test."""
    assert text.count(old) == 1, f"cpu-arm.toml no longer holds {old!r} exactly once"
    return text.replace(old, new)


# ---------------------------------------------------------------- the shipped profiles
@pytest.mark.parametrize("name", list_targets())
def test_every_profile_loads_and_is_consistent(name: str) -> None:
    prof = load_target(name)
    assert prof.name == name, "a profile's name must match its file name (bench reloads it by name)"
    assert prof.path == targets_dir() / f"{name}.toml"
    lo, hi = T.OPSET_RANGE
    assert lo <= prof.opset <= hi
    assert prof.graph_optimization in T.GRAPH_OPT_LEVELS
    assert set(prof.precisions) <= set(T.PRECISIONS) and prof.precisions
    assert prof.providers and {p.name for p in prof.providers} <= set(ort.get_all_providers())
    assert prof.ops_allow and all(isinstance(op, str) and op for op in prof.ops_allow)
    assert 0 <= prof.parity.min_top1_agreement <= 1
    if "int8" in prof.precisions:
        assert prof.parity.int8_min_top1_agreement is not None
    assert set(prof.ops_caveats) <= prof.ops_allow, "a caveat for an op the profile does not allow"
    # to_dict is what manifests embed: it must be JSON and name the same profile
    d = json.loads(json.dumps(prof.to_dict()))
    assert d["name"] == name and d["opset"] == prof.opset


def test_registry_finds_the_shipped_profiles() -> None:
    names = list_targets()
    assert names == sorted(p.stem for p in targets_dir().glob("*.toml"))
    assert {"cpu-arm", "cpu-x86"} <= set(names)


def test_targets_command_lists_every_profile(edgekd_main) -> None:
    r = edgekd_main("targets", "--json")
    assert r.code == 0, r.err
    assert [p["name"] for p in json.loads(r.out)] == list_targets()


def test_targets_command_shows_one_profile(edgekd_main) -> None:
    r = edgekd_main("targets", "cpu-arm", "--json")
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    assert shown["name"] == "cpu-arm"
    assert shown["opset"] == load_target("cpu-arm").opset
    assert "Relu" in shown["ops"]["allow"]


def test_target_given_as_a_toml_path(tmp_path: Path, edgekd_main) -> None:
    path = write(tmp_path, edit('name = "cpu-arm"', 'name = "my-board"'), "my-board.toml")
    prof = load_target(str(path))
    assert prof.name == "my-board" and prof.path == path
    assert load_target(path).name == "my-board"  # a Path works as well as a str
    r = edgekd_main("targets", str(path), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["name"] == "my-board"


def test_unknown_target_lists_the_valid_names(edgekd_main) -> None:
    with pytest.raises(BadInput) as e:
        load_target("cpu-armm")
    msg = str(e.value)
    assert "cpu-armm" in msg and "did you mean 'cpu-arm'" in msg
    for name in list_targets():
        assert name in msg
    r = edgekd_main("targets", "no-such-board")
    assert r.code == 2
    assert len(r.err_lines) == 1 and "no-such-board" in r.err and "cpu-x86" in r.err


def test_missing_toml_path_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        load_target(tmp_path / "absent.toml")


# ---------------------------------------------------------------- bad profiles
# (label, profile text, key the message must name)
BAD = [
    ("unknown top-level key", "colour = 'red'\n" + BASE, "colour"),
    ("unknown nested key", edit("inter_op_threads = 1", "inter_op_threads = 1\nthreads = 4"), "runtime.threads"),
    ("misspelled nested key", edit("atol = 1e-4", "atoll = 1e-4"), "parity.atoll"),
    ("missing required key", edit("opset = 17\n", ""), "opset"),
    ("missing required table", re.sub(r"\[precision\]\nallowed = .*\n", "", BASE), "precision"),
    ("missing nested key", edit('graph_optimization = "all"\n', ""), "runtime.graph_optimization"),
    ("opset as a string", edit("opset = 17", 'opset = "17"'), "opset"),
    ("opset as a float", edit("opset = 17", "opset = 17.0"), "opset"),
    ("threads as a bool", edit("intra_op_threads = 4", "intra_op_threads = true"), "runtime.intra_op_threads"),
    ("opset too high", edit("opset = 17", "opset = 99"), "opset"),
    ("opset too low", edit("opset = 17", "opset = 7"), "opset"),
    ("negative threads", edit("intra_op_threads = 4", "intra_op_threads = -1"), "runtime.intra_op_threads"),
    ("bad graph_optimization", edit('graph_optimization = "all"', 'graph_optimization = "max"'),
     "runtime.graph_optimization"),
    ("unknown precision", edit('allowed = ["fp32", "int8"]', 'allowed = ["fp32", "int4"]'), "precision.allowed"),
    ("empty precision list", edit('allowed = ["fp32", "int8"]', "allowed = []"), "precision.allowed"),
    ("unknown provider", edit('{ name = "XnnpackExecutionProvider"', '{ name = "XnnpakExecutionProvider"'),
     "runtime.providers[0].name"),
    ("provider as a string", edit('{ name = "CPUExecutionProvider" }', '"CPUExecutionProvider"'),
     "runtime.providers[1]"),
    ("no providers", re.sub(r"providers = \[.*?\n\]", "providers = []", BASE, flags=re.S), "runtime.providers"),
    ("unknown arch", edit('arch = "aarch64"', 'arch = "arm64"'), "arch"),
    ("op not a string", edit('allow = ["Conv"', 'allow = [1, "Conv"'), "ops.allow[0]"),
    ("empty op list", re.sub(r"allow = \[.*?\]\n", "allow = []\n", BASE), "ops.allow"),
    ("int8 without its threshold", edit("int8_min_top1_agreement = 0.99\n", ""), "parity.int8_min_top1_agreement"),
    ("agreement above 1", edit("min_top1_agreement = 1.0", "min_top1_agreement = 1.5"), "parity.min_top1_agreement"),
    ("negative budget", edit("latency_p90_ms = 5.0", "latency_p90_ms = -1.0"), "budget.latency_p90_ms"),
    ("zero budget", edit("model_size_mb = 2", "model_size_mb = 0"), "budget.model_size_mb"),
    ("budget as a string", edit("model_size_mb = 2", 'model_size_mb = "2MB"'), "budget.model_size_mb"),
    ("table given a scalar", "parity = 1\n" + re.sub(r"\n\[parity\]\n(?:.+\n?)+", "\n", BASE), "parity"),
]


@pytest.mark.parametrize("text,key", [pytest.param(t, k, id=label) for label, t, k in BAD])
def test_bad_profile_names_the_file_and_the_key(tmp_path: Path, text: str, key: str, edgekd_main) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BadInput) as e:
        load_target(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    assert f"'{key}'" in msg or f"key '{key}" in msg, msg
    assert "\n" not in msg
    # and through the CLI: exit 2, one line, no traceback
    r = edgekd_main("targets", str(path))
    assert r.code == 2, r
    assert len(r.err_lines) == 1 and str(path) in r.err and "Traceback" not in r.err


def test_bad_choice_lists_the_valid_values(tmp_path: Path) -> None:
    path = write(tmp_path, edit('graph_optimization = "all"', 'graph_optimization = "max"'))
    with pytest.raises(BadInput, match="disable, basic, extended, all"):
        load_target(path)
    path = write(tmp_path, edit('allowed = ["fp32", "int8"]', 'allowed = ["fp32", "int4"]'))
    with pytest.raises(BadInput, match="fp32, fp16, int8"):
        load_target(path)
    path = write(tmp_path, edit("opset = 17", "opset = 99"))
    with pytest.raises(BadInput, match=rf"{T.OPSET_RANGE[0]}\.\.{T.OPSET_RANGE[1]}"):
        load_target(path)


def test_unknown_provider_suggests_the_near_name(tmp_path: Path) -> None:
    path = write(tmp_path, edit('{ name = "XnnpackExecutionProvider"', '{ name = "XnnpakExecutionProvider"'))
    with pytest.raises(BadInput, match="XnnpakExecutionProvider.*did you mean 'XnnpackExecutionProvider'"):
        load_target(path)


def test_malformed_toml(tmp_path: Path, edgekd_main) -> None:
    path = write(tmp_path, BASE + "\n[[[ not toml\n")
    with pytest.raises(BadInput, match="malformed TOML") as e:
        load_target(path)
    assert str(path) in str(e.value)
    r = edgekd_main("targets", str(path))
    assert r.code == 2 and len(r.err_lines) == 1 and "malformed TOML" in r.err


def test_non_utf8_file(tmp_path: Path, edgekd_main) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(edit('description = "64-bit', 'description = "caf\xe9 64-bit').encode("latin-1"))
    with pytest.raises(BadInput, match="not UTF-8") as e:
        load_target(path)
    assert str(path) in str(e.value)
    r = edgekd_main("targets", str(path))
    assert r.code == 2 and len(r.err_lines) == 1


def test_optional_parts_may_be_left_out(tmp_path: Path) -> None:
    text = re.sub(r"\[budget\]\n(?:.+\n)+?\n", "", BASE)  # no budget: nothing to fail
    text = edit('description = "64-bit Arm Cortex-A CPU (Raspberry Pi 4/5 class) through ONNX Runtime"\n', "", text)
    text = edit('allowed = ["fp32", "int8"]', 'allowed = ["fp32"]', text)
    text = edit("int8_min_top1_agreement = 0.99\n", "", text)
    prof = load_target(write(tmp_path, text))
    assert prof.budget is None and prof.description == "" and prof.parity.int8_min_top1_agreement is None


@pytest.mark.parametrize("old,new", [
    ("atol = 1e-4", "atol = nan"),
    ("min_top1_agreement = 1.0", "min_top1_agreement = nan"),
    ("latency_p90_ms = 5.0", "latency_p90_ms = nan"),
])
def test_nan_is_out_of_range(tmp_path: Path, old: str, new: str) -> None:
    with pytest.raises(BadInput, match="nan"):
        load_target(write(tmp_path, edit(old, new)))


@pytest.mark.parametrize("name", ["../escape", "", "a/b"])
def test_name_must_be_a_plain_folder_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadInput, match="'name'"):
        load_target(write(tmp_path, edit('name = "cpu-arm"', f'name = "{name}"')))


def test_huge_integer_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="parity.atol"):
        load_target(write(tmp_path, edit("atol = 1e-4", "atol = 1" + "0" * 400)))


def test_key_with_a_newline_gives_one_line(tmp_path: Path, edgekd_main) -> None:
    path = write(tmp_path, '"bad\\nkey" = 1\n' + BASE)
    with pytest.raises(BadInput) as e:
        load_target(path)
    assert "\n" not in str(e.value)
    r = edgekd_main("targets", str(path))
    assert r.code == 2 and str(path) in r.err


# ---------------------------------------------------------------- property: only BadInput escapes
def toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(d: dict) -> str:
    """A tiny TOML writer: every table inline, which TOML allows at any depth."""
    return "".join(f"{toml_str(k)} = {toml_value(v)}\n" for k, v in d.items())


def test_toml_writer_round_trips() -> None:
    import tomllib

    d = {"a": 1, "b\"\\\n": [1.5, "x\x7f", True, {"c": {}}], "n": {"k": -0.0, "e": 1e-5}}
    assert tomllib.loads(to_toml(d)) == d
    assert tomllib.loads(to_toml(tomllib.loads(BASE))) == tomllib.loads(BASE)


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
KEYS = st.one_of(st.sampled_from(sorted(T.SCHEMA) + ["providers", "allow", "atol", "allowed", "name", "options"]),
                 TEXT)
SCALARS = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), TEXT,
                    st.sampled_from(["fp32", "int8", "all", "CPUExecutionProvider", "Conv", "aarch64"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)


@st.composite
def mutated_profile(draw) -> dict:
    """The valid cpu-arm profile with a few keys replaced, removed or added at any depth."""
    import copy

    import tomllib

    d = copy.deepcopy(tomllib.loads(BASE))
    for _ in range(draw(st.integers(1, 3))):
        node = d
        while True:
            tables = [k for k, v in node.items() if isinstance(v, dict)]
            if not tables or not draw(st.booleans()):
                break
            node = node[draw(st.sampled_from(tables))]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "add" or not node:
            node[draw(KEYS)] = draw(VALUES)
        elif action == "delete":
            del node[draw(st.sampled_from(sorted(node)))]
        else:
            node[draw(st.sampled_from(sorted(node)))] = draw(VALUES)
    return d


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(mutated_profile(), st.dictionaries(KEYS, VALUES, max_size=8)))
def test_any_toml_loads_or_is_bad_input(scratch: Path, data: dict) -> None:
    path = scratch / "fuzz.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    try:
        prof = load_target(path)
    except BadInput as e:
        assert str(path) in str(e)  # one line: see test_key_with_a_newline_gives_one_line
        return
    # whatever loads honours the schema's promises
    assert T.OPSET_RANGE[0] <= prof.opset <= T.OPSET_RANGE[1]
    assert prof.graph_optimization in T.GRAPH_OPT_LEVELS
    assert prof.providers and set(prof.precisions) <= set(T.PRECISIONS)
    assert prof.ops_allow
