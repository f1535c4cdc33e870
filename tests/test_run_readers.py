"""The run folder's typed contract has one reader and writer: edgekd/run/.

`test_no_module_outside_edgekd_run_opens_a_run_file` parses every module under edgekd/ (but edgekd/run/) and
fails where one reads or writes manifest.json, bench.json, distill.json, metrics.jsonl or config.json itself
(json, open, read_text, read_json, write_json...) instead of through `edgekd.run`'s load and write functions.
The checker follows a file name through module constants (`artifacts.MANIFEST`), local variables, loop variables
and one level of local helper functions; the tests below plant each of those reads to show it catches them. It
does not follow a path stored on an object (`self.path = run / "metrics.jsonl"` in one method, opened in
another) or passed between modules: such a read would slip through, so keep run-file paths in locals.

Also here: the API's failure paths read the partial result through the contract and say so when they cannot.
"""

from __future__ import annotations

import ast
import functools
import json
from pathlib import Path

import pytest

from edgekd import api
from edgekd.errors import BudgetFailed

from helpers import report_fixtures as fx

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "edgekd"
RUN_FILES = ("manifest.json", "bench.json", "distill.json", "metrics.jsonl", "config.json")
# calls that read or write a file: json.load(s)/dump, edgekd.artifacts' readers and writers, open, Path's
READERS = frozenset({"load", "loads", "dump", "read_json", "write_json", "write_bytes", "read_text", "read_bytes",
                     "write_text", "open", "atomic_path", "save_npz"})
# calls whose result is still a path (or paths) when their argument or receiver is one
PATH_CALLS = frozenset({"sorted", "list", "tuple", "Path", "str", "glob", "rglob", "resolve", "absolute", "joinpath",
                        "with_name", "with_suffix", "manifest_path", "expanduser", "fspath", "join"})


def _names_run_file(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and any(
        node.value.endswith(f) for f in RUN_FILES)


def _bound(target: ast.AST) -> set[str]:
    """The plain names an assignment target binds (`x`, `a, b`); `obj.attr = ...` binds none."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return {n for t in target.elts for n in _bound(t)}
    return set()


def _module_constants(tree: ast.Module) -> set[str]:
    """Module-level names bound to a run file's name (MANIFEST = "manifest.json")."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and _names_run_file(node.value):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


class _Checker:
    """Finds reads and writes of the run files in one module's source."""

    def __init__(self, source: str, constants: dict[str, set[str]]):
        self.tree = ast.parse(source)
        self.tainted_attrs = {(mod.rpartition(".")[2], name) for mod, names in constants.items() for name in names}
        self.globals = set(_module_constants(self.tree))
        for node in ast.walk(self.tree):  # from edgekd.artifacts import MANIFEST
            if isinstance(node, ast.ImportFrom) and node.module in constants:
                self.globals |= {a.asname or a.name for a in node.names if a.name in constants[node.module]}
        self.helpers: set[str] = set()
        self.helpers = self._helpers()

    def tainted(self, expr: ast.AST | None, names: set[str]) -> bool:
        """Is `expr` a run file's path: a literal, a tainted name or a module's constant (artifacts.MANIFEST),
        through path arithmetic and path-building calls (glob, sorted, Path...)? Any other call's result is
        something else (`load_manifest(path)` is a Manifest, not a path), so the name stops there."""
        if expr is None:
            return False
        if _names_run_file(expr) or (isinstance(expr, ast.Name) and expr.id in names):
            return True
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and (
                (expr.value.id, expr.attr) in self.tainted_attrs):
            return True
        if isinstance(expr, ast.Call):
            f = expr.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name not in PATH_CALLS:
                return False
            parts = [*expr.args, *(k.value for k in expr.keywords)] + ([f.value] if isinstance(f, ast.Attribute)
                                                                       else [])
            return any(self.tainted(a, names) for a in parts)
        if isinstance(expr, ast.Attribute):  # run/"x.json" is the file; its .parent, .name... are not
            return False
        return any(self.tainted(c, names) for c in ast.iter_child_nodes(expr))

    def _is_reader(self, call: ast.Call) -> bool:
        f = call.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        return name in READERS or name in self.helpers

    def _reads(self, call: ast.Call, names: set[str]) -> bool:
        if not self._is_reader(call):
            return False
        receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
        receiver_is_module = isinstance(receiver, ast.Name) and receiver.id in ("json", "artifacts", "np", "os")
        args = [*call.args, *(k.value for k in call.keywords)]
        return any(self.tainted(a, names) for a in args) or (
            receiver is not None and not receiver_is_module and self.tainted(receiver, names))

    def _helpers(self) -> set[str]:
        """Module functions that read or write a path given as a parameter (one level of indirection)."""
        out = set()
        for fn in self.tree.body:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
                if any(isinstance(c, ast.Call) and self._reads(c, self._flow(fn, params)) for c in ast.walk(fn)):
                    out.add(fn.name)
        return out

    def _flow(self, scope: ast.AST, names: set[str]) -> set[str]:
        """`names` plus every local bound (assignment, loop, with ... as) from an expression that names a run
        file; repeated until nothing is added, so order and nesting do not matter."""
        names = set(names) | self.globals
        while True:
            before = len(names)
            for node in ast.walk(scope):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if self.tainted(node.value, names):
                        names |= {n for t in targets for n in _bound(t)}
                elif isinstance(node, (ast.For, ast.comprehension)) and self.tainted(node.iter, names):
                    names |= _bound(node.target)
                elif isinstance(node, ast.withitem) and node.optional_vars is not None and self.tainted(
                        node.context_expr, names):
                    names |= _bound(node.optional_vars)
            if len(names) == before:
                return names

    def violations(self) -> list[int]:
        """Line numbers of calls that read or write a run file."""
        scopes = [n for n in ast.walk(self.tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        lines = set()
        for scope in [self.tree, *scopes]:
            names = self._flow(scope, set())
            for node in ast.walk(scope):
                if isinstance(node, ast.Call) and self._reads(node, names):
                    lines.add(node.lineno)
        return sorted(lines)


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(REPO).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


@functools.cache
def _constants() -> dict[str, set[str]]:
    return {m: c for m, p in _modules().items() if (c := _module_constants(ast.parse(p.read_text())))}


def check(source: str) -> list[int]:
    return _Checker(source, _constants()).violations()


def test_no_module_outside_edgekd_run_opens_a_run_file():
    found = []
    for name, path in _modules().items():
        if name == "edgekd.run" or name.startswith("edgekd.run."):
            continue
        found += [f"{path.relative_to(REPO)}:{line}" for line in check(path.read_text())]
    assert not found, ("read or write these through edgekd.run (load_manifest, load_bench, load_distill, "
                       "load_metrics, amend, write_bench, ...), not directly: " + ", ".join(found))


@pytest.mark.parametrize("planted", [
    'def f(run):\n    return json.loads((run / "manifest.json").read_text())\n',
    'def f(run):\n    return artifacts.read_json(run / "cpu-arm" / "bench.json")\n',
    'def f(run):\n    p = run / "distill.json"\n    q = p\n    return json.loads(q.read_text())\n',
    'def f(run):\n    with open(run / "metrics.jsonl") as fh:\n        return fh.read()\n',
    'def f(run):\n    return [json.loads(m.read_text()) for m in run.glob("*/manifest.json")]\n',
    'def f(run):\n    for m in sorted(run.glob(f"*/{artifacts.MANIFEST}")):\n        read_json(m)\n',
    'from edgekd.artifacts import MANIFEST\ndef f(run):\n    return read_json(run / MANIFEST)\n',
    'NAME = "bench.json"\ndef f(run):\n    return (run / NAME).read_text()\n',
    'def _json(path):\n    return json.loads(path.read_text())\ndef f(run):\n    return _json(run / "manifest.json")\n',
    'def f(run, d):\n    artifacts.write_json(run / "manifest.json", d)\n',
])
def test_the_checker_catches_a_planted_read(planted):
    assert check("import json\nfrom edgekd import artifacts\n" + planted), planted


@pytest.mark.parametrize("fine", [
    'def f(run):\n    return load_manifest(run / "cpu-arm" / "manifest.json")\n',
    'def f(run):\n    raise BadInput(f"{run}: no manifest.json; run `edgekd export` first")\n',
    'def f(run):\n    return json.loads((run / "compare.json").read_text())\n',
    'def f(run):\n    return [p.parent for p in run.glob("*/bench.json")]\n',
    'def f(run):\n    return (run / "distill.json").is_file()\n',
])
def test_the_checker_lets_typed_reads_and_mere_mentions_pass(fine):
    assert check("import json\nfrom edgekd import artifacts\n" + fine) == [], fine


# ---------------------------------------------------------------- the API's failure paths
def _failing_bench(write):
    """A bench_any that writes bench.json with `write`, then fails its budget, as bench_run does."""
    def bench_any(*, run, targets, **_):
        write(Path(run) / "cpu-arm")
        raise BudgetFailed("bench cpu-arm on local: budget latency_p90_ms: 9 > 1")
    return bench_any


def test_a_failed_bench_attaches_the_typed_bench_json(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fx.bench(run)
    monkeypatch.setattr("edgekd.bench.run.bench_any", _failing_bench(lambda out: None))
    with pytest.raises(BudgetFailed) as e:
        api.bench(target="cpu-arm", run=run)
    assert isinstance(e.value.result, api.BenchResult) and e.value.result.target == "cpu-arm"
    assert e.value.result_error is None and "could not be read" not in str(e.value)


def test_a_failed_bench_whose_bench_json_breaks_the_contract_says_so(tmp_path, monkeypatch):
    """Before: _partial swallowed the error and the caller got result None with no word why."""
    run = tmp_path / "run"
    doc = fx.bench(run)
    del doc["budget"]
    (run / "cpu-arm" / "bench.json").write_text(json.dumps(doc))
    monkeypatch.setattr("edgekd.bench.run.bench_any", _failing_bench(lambda out: None))
    with pytest.raises(BudgetFailed) as e:
        api.bench(target="cpu-arm", run=run)
    assert e.value.result is None
    assert e.value.result_error.startswith(f"file {run / 'cpu-arm' / 'bench.json'}: field 'budget' missing")
    assert "budget latency_p90_ms: 9 > 1; its result could not be read: file " in str(e.value)


def test_a_bug_while_reading_the_partial_result_is_not_swallowed(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fx.bench(run)
    monkeypatch.setattr("edgekd.bench.run.bench_any", _failing_bench(lambda out: None))

    def broken(*a, **k):
        raise KeyError("a bug")
    monkeypatch.setattr("edgekd.run.bench.load_bench", broken)
    with pytest.raises(KeyError, match="a bug"):
        api.bench(target="cpu-arm", run=run)


# ---------------------------------------------------------------- the CLI tables read the typed objects
def _text(renderable) -> str:
    from rich.console import Console

    console = Console(width=240, record=True)
    console.print(renderable)
    return console.export_text()


def test_the_tables_render_the_typed_files_and_their_json(tmp_path):
    from edgekd.run.bench import load_bench
    from edgekd.run.distill import load_distill
    from edgekd.run.manifest import load_manifest
    from edgekd.tables import bench_output, bench_table, distill_table, export_table

    run = fx.full_run(tmp_path / "run")
    d, m, b = (load_distill(run / "distill.json"), load_manifest(run / "cpu-arm" / "manifest.json"),
               load_bench(run / "cpu-arm" / "bench.json"))
    text = _text(distill_table(d))
    assert "distill on digits for cpu-arm" in text and f"{100 * fx.TEACHER_ACC:.2f}%" in text
    assert _text(distill_table(d.to_json())) == text
    text = _text(export_table(m))
    assert "export cpu-arm — DEPLOYABLE" in text and "model.int8.onnx  18,741 B" in text
    assert _text(export_table(m.to_json())) == text
    text = _text(bench_table(b))
    assert "bench cpu-arm on local: CPUExecutionProvider" in text and "recommended: fp32" in text
    assert "teacher ONNX" in text and "student int8" in text
    assert "top operators: cpu-arm fp32" in _text(bench_output({"mode": "run", **b.to_json()}))


def test_a_table_given_json_that_breaks_the_contract_names_the_field(tmp_path):
    from edgekd.errors import BadInput
    from edgekd.tables import bench_table

    doc = fx.bench(tmp_path / "run")
    del doc["fp32"]["provider"]
    with pytest.raises(BadInput, match=r"field 'fp32.provider' missing"):
        bench_table(doc)
