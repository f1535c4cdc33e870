"""The layout's rules (README "Architecture"), checked on the parsed imports of every module,
function-level imports included (imports under `if TYPE_CHECKING:` are not run, so not counted):

- every module belongs to a layer of LAYERS, and imports only its own layer and the layers below it:
  nothing imports upward, and two peers of one rank (train, bench) never import each other. No exemptions;
- so the core packages (run, runtime, data, models) import no stage, and deploy never imports bench,
  train or search;
- no import cycle between modules, nor between the subpackages;
- edgekd/runtime/agent.py imports only the standard library, numpy and onnxruntime, and ONNX Runtime
  sessions are built only under edgekd/runtime/;
- pyproject.toml names every package under edgekd/ (the wheel carries exactly those);
- the README's architecture tree names every module and subpackage;
- no function is over 60 lines (MAX_FUNCTION_LINES), in any module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "edgekd"
SUBPACKAGES = ("run", "runtime", "data", "models", "deploy", "train", "bench", "search", "report")
# The layers, lowest first. A module imports its own layer and the layers below it. Names in one tuple
# are peers of one rank: neither imports the other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),            # the top-level helpers below (errors, defaults, artifacts, ...) and edgekd/__init__
    ("run",),             # the run folder's typed files: the contract between the stages
    ("runtime",),         # ONNX Runtime: the standalone agent and the one session builder
    ("data",),
    ("models",),          # registry, blocks, MAC counting, torch → ONNX, foreign teachers, checkpoints
    ("deploy",),          # target profiles, export, audit, parity, quantize, runtime environments
    ("tables",),          # the console tables the commands print (they read deploy's runtime status)
    ("train", "bench"),   # the stages above deploy
    ("search",),          # select-student and select-teacher: train + deploy + bench
    ("report",),
    ("recipe",),          # --config: recipes and a run's config.json, read against options.py
    ("api",),
    ("cli",),
)
# Top-level modules of the base layer. edgekd/__init__.py is here: it imports nothing at run time (its
# public names, `edgekd.bench(...)`'s call included, resolve lazily through importlib on first use).
BASE = ("edgekd", "errors", "checks", "defaults", "options", "artifacts", "ranks", "progress", "provenance")
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
CORE = ("base", "run", "runtime", "data", "models")
STAGES = ("deploy", "train", "bench", "search", "report", "tables", "recipe", "api", "cli")
MAX_FUNCTION_LINES = 60   # every function of every module (issue 19: no function over 60 lines)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported(path: Path) -> set[str]:
    """Every module name `path` imports at run time (absolute, relative and function-level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(head + ([node.module] if node.module else []))
            for a in node.names:  # `from edgekd import artifacts` imports the module edgekd.artifacts
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return out


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        edges[name] = {m for m in imported(path) if m in MODULES and m != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def layer(module: str) -> str:
    """The layer of a module: its subpackage, its top-level name (api, cli, tables), or base."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    return "cli" if parts[1] == "__main__" else parts[1]


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in SUBPACKAGES else None


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import that runs up the layers, or across to a peer of the same rank."""
    return [f"{src} → {dst}" for src, targets in sorted(edges.items()) for dst in sorted(targets)
            if layer(src) != layer(dst) and RANK[layer(dst)] >= RANK[layer(src)]]


# ---------------------------------------------------------------- the rules
def test_the_graph_is_read_from_real_imports():
    edges = graph()
    assert "edgekd.deploy.targets" in edges["edgekd.deploy.export"]
    assert "edgekd.train.losses" in edges["edgekd.train.distill"]
    assert "edgekd.api" in edges["edgekd.cli"]  # function-level imports count
    assert "edgekd.checks" not in edges["edgekd.errors"]  # TYPE_CHECKING imports do not


def test_no_import_cycle_between_modules():
    edges = graph()
    assert find_cycle(edges) is None, " → ".join(find_cycle(edges) or [])


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_layer():
    assert {m: layer(m) for m in MODULES if layer(m) not in RANK} == {}
    assert set(SUBPACKAGES) <= set(RANK) and {module_name(p.parent) for p in PKG.rglob("__init__.py")} == {
        "edgekd", *(f"edgekd.{s}" for s in SUBPACKAGES)}


def test_nothing_imports_upward():
    assert upward(graph()) == []


def test_upward_finds_what_it_must():
    """The rule can fail: the arrows this layout removed, and a peer import, are each caught."""
    for src, dst in (("edgekd.models.registry", "edgekd.deploy.audit"), ("edgekd.models.checkpoints",
                     "edgekd.deploy.targets"), ("edgekd.deploy.parity", "edgekd.bench.runners"),
                     ("edgekd.bench.run", "edgekd.train.distill"), ("edgekd.data.load", "edgekd.models.registry"),
                     ("edgekd.runtime.session", "edgekd.data")):
        assert upward({src: {dst}}) == [f"{src} → {dst}"]
    assert upward({"edgekd.deploy.export": {"edgekd.models.registry", "edgekd.runtime.session", "edgekd.run"}}) == []


def test_no_cycle_between_subpackages():
    layers: dict[str, set[str]] = {s: set() for s in SUBPACKAGES}
    for src, targets in graph().items():
        for dst in targets:
            a, b = subpackage(src), subpackage(dst)
            if a and b and a != b:
                layers[a].add(b)
    assert find_cycle(layers) is None, " → ".join(find_cycle(layers) or [])
    assert layers["search"] >= {"train", "deploy", "bench"} and "deploy" in layers["train"]  # the flow, as drawn
    assert layers["deploy"] >= {"runtime", "models"} and "runtime" in layers["bench"]


@pytest.mark.parametrize("low, high", [("deploy", ("bench", "train", "search")), ("bench", ("train", "search"))])
def test_deployment_never_imports_bench_training_or_search(low, high):
    bad = [(src, dst) for src, targets in graph().items() if layer(src) == low
           for dst in targets if layer(dst) in high]
    assert bad == []


def test_the_core_imports_no_stage():
    """base, run (the contract), runtime, data and models sit below every stage: the stages import them."""
    bad = [(src, dst) for src, targets in graph().items() if layer(src) in CORE
           for dst in targets if layer(dst) in STAGES]
    assert bad == []


def test_the_agent_imports_only_stdlib_numpy_and_onnxruntime():
    mods = imported(PKG / "runtime" / "agent.py")
    top = {m.split(".")[0] for m in mods if m}
    foreign = {m for m in top if m not in sys.stdlib_module_names and m not in ("numpy", "onnxruntime", "__future__")}
    assert foreign == set()


def sessions_built(path: Path) -> list[int]:
    """Lines that build an ONNX Runtime session or its options (`InferenceSession(`, `SessionOptions(`)."""
    calls = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Call)]
    return [n.lineno for n in calls
            if (getattr(n.func, "attr", None) or getattr(n.func, "id", None)) in ("InferenceSession", "SessionOptions")]


def test_sessions_are_built_only_in_the_runtime():
    assert sessions_built(PKG / "runtime" / "agent.py") and sessions_built(PKG / "runtime" / "session.py")
    bad = {name: sessions_built(p) for name, p in MODULES.items() if layer(name) != "runtime" and sessions_built(p)}
    assert bad == {}


def test_pyproject_lists_every_package():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(conf["packages"])
    on_disk = {module_name(p.parent) for p in PKG.rglob("__init__.py")}
    assert packages - {"edgekd._profiles"} == on_disk
    assert conf["package-dir"]["edgekd._profiles"] == "targets"
    assert (PKG / "py.typed").is_file() and "py.typed" in conf["package-data"]["edgekd"]


def readme_tree() -> dict[str, str]:
    """The architecture tree's entries: a top-level name ("api.py", "data/") → the text of its entry."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Architecture", 1)[1].split("\n## ", 1)[0].split("```", 2)[1]
    entries: dict[str, str] = {}
    key = None
    for line in block.splitlines():
        if line.startswith("  ") and line[2:3].strip():
            key = line.split()[0]
            entries[key] = line
        elif key and line.startswith("    "):
            entries[key] += "\n" + line
    return entries


def test_readme_architecture_names_every_module():
    """Every top-level module and subpackage has its entry; every module of a subpackage is named in it."""
    import re

    tree = readme_tree()
    missing = []
    for name in MODULES:
        parts = name.split(".")
        if len(parts) == 1 or parts[-1] == "__main__":
            continue
        if len(parts) == 2:
            ok = (f"{parts[1]}/" if parts[1] in SUBPACKAGES else f"{parts[1]}.py") in tree
        else:
            ok = re.search(rf"(?<![\w./]){re.escape(parts[2])}(?![\w/])", tree.get(f"{parts[1]}/", "")) is not None
        if not ok:
            missing.append(name)
    assert missing == []


# ---------------------------------------------------------------- short functions
def long_functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [(n.name, n.end_lineno - n.lineno + 1) for n in functions
            if n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_function_is_over_60_lines():
    too_long = {name: long_functions(p) for name, p in MODULES.items() if long_functions(p)}
    assert too_long == {}


def test_the_length_rule_can_fail(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "def g():\n    pass\n")
    assert long_functions(src) == [("f", MAX_FUNCTION_LINES + 1)]


def test_public_classes_have_docstrings():
    missing = []
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node):
                missing.append(f"{name}.{node.name}")
    assert missing == []


# ---------------------------------------------------------------- the tests' own layout
def imports_of_test_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import of a `test_*` module in `source`, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0].startswith("test_")]
    return found


def test_imports_of_test_modules_are_found():
    src = ("import os\nfrom test_quantize import tiny_convnet\n"
           "def f():\n    import test_data.x\nfrom helpers import fs\n")
    assert imports_of_test_modules(src) == [(2, "test_quantize"), (4, "test_data.x")]


def test_no_test_file_imports_another():
    """Shared helpers live in tests/helpers/ (or are conftest fixtures): importing a test file runs its
    module code (and its tests' imports) and ties the two files together."""
    bad = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in sorted((REPO / "tests").rglob("*.py"))
           for line, name in imports_of_test_modules(p.read_text(encoding="utf-8"))]
    assert bad == [], "move the shared code to tests/helpers/: " + "; ".join(bad)
