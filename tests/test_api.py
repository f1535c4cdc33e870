"""The Python API (`import edgekd`): every public function called directly on one tiny run, typed
results equal to what the commands write, failures as data, the CLI ↔ API equivalence (same
defaults, one API call per command, parameter names shown as flags), laziness, and the
README's "From Python" example run as written.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekd
from edgekd import api

REPO = Path(__file__).resolve().parent.parent
TINY = dict(epochs=1, teacher_epochs=1, seeds=1, teacher="cnn-small", progress=False)
PUBLIC = ("distill", "compare", "select_teacher", "select_student", "export", "bench", "audit", "verify",
          "load_target", "list_targets")


# The shared run's int8 variant is a 2-epoch student's: its top-1 agreement may miss 0.99 (helpers/tiny_run.py).
INT8_HALF = ("int8_min_top1_agreement = 0.99", "int8_min_top1_agreement = 0.5")


def profile(tmp: Path, name: str, **edits: tuple[str, str]) -> Path:
    """A copy of cpu-arm.toml named `name`, with text edits (old → new), as a .toml path."""
    text = (REPO / "targets" / "cpu-arm.toml").read_text().replace('name = "cpu-arm"', f'name = "{name}"')
    for old, new in edits.values():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the surface
def test_import_edgekd_exposes_the_api_registries_and_exceptions():
    from edgekd import errors, models
    from edgekd.train import losses

    for name in PUBLIC:
        assert callable(getattr(edgekd, name)), name
    assert edgekd.TEACHERS is models.TEACHERS and edgekd.STUDENTS is models.STUDENTS and edgekd.LOSSES is losses.LOSSES
    for name in ("ParityFailed", "AuditFailed", "BudgetFailed", "GoldenFailed", "VerifyFailed"):
        assert issubclass(getattr(edgekd, name), errors.CheckFailed), name
    assert edgekd.BadInput is errors.BadInput and edgekd.Failure.__module__ == "edgekd.checks"
    assert set(PUBLIC) <= set(edgekd.__all__) <= set(dir(edgekd))
    with pytest.raises(AttributeError):
        edgekd.no_such_name


def test_every_api_function_is_keyword_only_and_typed():
    for name in PUBLIC:
        sig = inspect.signature(getattr(api, name))
        for p in sig.parameters.values():
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}({p.name})"
            assert p.annotation is not inspect.Parameter.empty, f"{name}({p.name})"
        assert sig.return_annotation is not inspect.Parameter.empty, name


def test_import_and_help_do_not_load_torch():
    code = ("import sys, edgekd\nedgekd.BadInput, edgekd.distill, edgekd.bench\n"
            "from edgekd import cli\nsys.argv = ['edgekd', '--help']\n"
            "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out


def test_bench_is_both_the_subpackage_and_the_api_function():
    import edgekd.bench.run  # noqa: F401  (the import that would clobber a plain function)

    assert edgekd.bench is sys.modules["edgekd.bench"] and callable(edgekd.bench)
    with pytest.raises(edgekd.BadInput):
        edgekd.bench(run=Path("/nonexistent/run"))


# ---------------------------------------------------------------- each function, on one run
def test_distill_returns_the_numbers_and_writes_them(tiny_run):
    res = tiny_run.distill
    assert isinstance(res, api.DistillResult) and res.is_main
    # run=None: the run is artifacts/<id> under the working folder, named as the API got it (relative)
    assert (tiny_run.work / res.run).resolve() == tiny_run.run == (tiny_run.work / "artifacts" / "latest").resolve()
    written = json.loads((tiny_run.run / "distill.json").read_text())
    assert res.to_json() == {**written, "run": str(res.run)}
    assert res.student == written["accuracy"]["student"]["mean"] and 0 <= res.student_alone <= 1
    assert res.teacher_accuracy == written["accuracy"]["teacher"]
    prov = written["provenance"]
    assert prov["edgekd"] == edgekd.__version__ and prov["world_size"] == 1 and prov["backend"] is None
    import torch

    assert prov["torch"] == torch.__version__.split("+")[0] or prov["torch"] == torch.__version__
    assert {"torchvision", "onnxruntime", "python", "platform", "device"} <= set(prov)


def test_export_returns_the_manifest(tiny_run):
    exp = tiny_run.export
    assert isinstance(exp, api.ExportResult) and exp.deployable and exp.model.is_file()
    manifest = tiny_run.export_manifest  # as export wrote it (the shared run was benched since)
    assert exp.to_json() == manifest and exp.top1_agreement == manifest["parity"]["top1_agreement"] == 1.0


def test_bench_returns_bench_json_with_the_host_cpu(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path / "run")
    relaxed = profile(tmp_path, "cpu-arm", lat=("latency_p90_ms = 5.0", "latency_p90_ms = 1000.0"), int8=INT8_HALF)
    out = edgekd.bench(target=relaxed, run=run, min_seconds=0.05, compare=False)
    assert isinstance(out, api.BenchResult) and out.budget_passed and out.latency_p90_ms >= out.latency_p50_ms > 0
    written = json.loads((run / "cpu-arm" / "bench.json").read_text())
    assert out.mode == "run" and out.to_json() == {"mode": "run", **written}  # the --json output: bench.json + mode
    host = written["host"]
    assert host["machine"] and set(host["flags"] or {}) <= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                           "amx", "neon"}


def test_a_budget_miss_is_budget_failed_with_the_numbers(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path / "run")
    tight = profile(tmp_path, "cpu-arm", lat=("latency_p90_ms = 5.0", "latency_p90_ms = 0.000001"), int8=INT8_HALF)
    with pytest.raises(edgekd.BudgetFailed) as e:
        api.bench(target=tight, run=run, min_seconds=0.05, compare=False)
    [f] = e.value.failures
    assert (f.kind, f.name, f.limit) == ("budget", "latency_p90_ms", pytest.approx(1e-6)) and f.value > f.limit
    assert "latency_p90_ms" in str(e.value) and "1e-06" in str(e.value)
    assert isinstance(e.value.result, api.BenchResult) and e.value.result.budget_passed is False


def test_a_wrong_golden_output_is_golden_failed(tiny_run, tmp_path):
    run = tiny_run.copy(tmp_path / "run")
    golden = run / "cpu-arm" / "golden.npz"
    arrays = dict(np.load(golden))
    np.savez(golden, **{**arrays, "outputs": -arrays["outputs"]})  # every argmax now disagrees
    relaxed = profile(tmp_path, "cpu-arm", lat=("latency_p90_ms = 5.0", "latency_p90_ms = 1000.0"), int8=INT8_HALF)
    with pytest.raises(edgekd.GoldenFailed) as e:
        api.bench(target=relaxed, run=run, min_seconds=0.05, compare=False)
    failures = e.value.failures  # one per precision: the shared run has an int8 variant too
    assert [f.kind for f in failures] == ["golden", "golden"] and all(f.value < 0.5 for f in failures)


def test_a_parity_miss_is_parity_failed_and_the_manifest_says_so(tiny_run, tmp_path, monkeypatch):
    from edgekd.runtime import session

    run = tiny_run.copy(tmp_path / "run")
    real = session.ort_run
    monkeypatch.setattr(session, "ort_run", lambda session, x, **kw: -real(session, x, **kw))  # a broken runtime
    with pytest.raises(edgekd.ParityFailed) as e:
        api.export(target="cpu-arm", run=run)
    kinds = {(f.kind, f.name) for f in e.value.failures}
    assert ("parity", "logits top1_agreement") in kinds
    agree = next(f for f in e.value.failures if f.name == "logits top1_agreement")
    assert agree.value < agree.limit == 1.0
    assert e.value.result.deployable is False and e.value.result.to_json()["checks"]["passed"] is False


def test_audit_passes_and_fails_with_one_failure_per_op(tiny_run, tmp_path):
    exp = tiny_run.export
    ok = api.audit(model=exp.model, target="cpu-arm")
    assert isinstance(ok, api.AuditResult) and ok.passed and ok.unsupported == [] and "Conv" in ok.used
    no_conv = profile(tmp_path, "no-conv", ops=('"Conv", ', ""))
    with pytest.raises(edgekd.AuditFailed) as e:
        api.audit(model=exp.model, target=no_conv)
    [f] = e.value.failures
    assert (f.kind, f.name, f.limit) == ("audit", "Conv", 0) and f.value >= 1
    assert e.value.result.passed is False and e.value.result.unsupported == ["Conv"]


def test_verify_passes_then_names_a_changed_file(tiny_run, tmp_path):
    ok = api.verify(run=tiny_run.run)
    assert isinstance(ok, api.VerifyResult) and "cpu-arm/model.onnx" in ok.checked
    run = tiny_run.copy(tmp_path / "run")
    model = run / "cpu-arm" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(edgekd.VerifyFailed) as e:
        api.verify(run=run)
    [f] = e.value.failures
    assert f.kind == "verify" and f.name == "cpu-arm/model.onnx" and f.value != f.limit


def test_load_target_and_list_targets():
    names = sorted(p.stem for p in (REPO / "targets").glob("*.toml"))
    profiles = edgekd.list_targets()
    assert [p.name for p in profiles] == names
    prof = edgekd.load_target(name="cpu-arm")
    assert isinstance(prof, edgekd.TargetProfile) and prof.to_json()["name"] == "cpu-arm"
    with pytest.raises(edgekd.BadInput, match="unknown target 'cpu-armm'.*did you mean 'cpu-arm'"):
        edgekd.load_target(name="cpu-armm")


def test_compare(tiny_run, tmp_path):
    out = edgekd.compare(methods=["soft"], teacher=str(tiny_run.run / "teacher.pt"), run=tmp_path / "cmp",
                         **{k: v for k, v in TINY.items() if k != "teacher"})
    assert isinstance(out, api.CompareResult)
    assert set(out.accuracy) == {"teacher", "student alone", "soft"}
    assert out.to_json() == json.loads((tmp_path / "cmp" / "compare.json").read_text())


def test_select_teacher(tiny_run):
    out = edgekd.select_teacher(teachers=[str(tiny_run.run / "teacher.pt"), "cnn-small"], n=32, teacher_epochs=1,
                                progress=False)
    assert isinstance(out, api.TeacherSelection) and sorted(out.ranking) == sorted(out.grace) and len(out.ranking) == 2
    assert all(0 <= v <= 1 for v in out.val_accuracy.values())
    assert out.to_json()["teachers"][0]["teacher"] == out.ranking[0]


def test_select_student(tiny_run, tmp_path, monkeypatch):
    """Timed by a fake runner (deterministic, no subprocess); everything else is real."""
    from edgekd.search import timing


    def fake(runner, model, config, target=None):
        return {"latency_ms": {"p50": 0.01, "p90": 0.01}, "peak_rss_mb": 50.0, "model_bytes": model.stat().st_size,
                "provider": "CPUExecutionProvider", "threads": 1}

    monkeypatch.setattr(timing, "run_isolated", fake)
    out = edgekd.select_student(target="cpu-arm", teacher=str(tiny_run.run / "teacher.pt"), trials=2, epochs=1,
                                short_epochs=1, run=tmp_path / "sel", progress=False)
    assert isinstance(out, api.StudentSelection) and out.run == tmp_path / "sel" and out.latency_p90_ms == 0.01
    assert "summary" not in out.to_json() and out.to_json()["recommended"]["name"] == out.recommended
    assert json.loads((out.run / "distill.json").read_text())["provenance"]["world_size"] == 1


# ---------------------------------------------------------------- errors name parameters; the CLI shows flags
def test_library_errors_name_parameters_and_the_cli_shows_flags(edgekd_main, tmp_path, monkeypatch):
    with pytest.raises(edgekd.BadInput) as e:
        edgekd.distill(epochs=0, progress=False)
    assert str(e.value).startswith("epochs 0:") and e.value.params == ("epochs",) and "--" not in str(e.value)
    with pytest.raises(edgekd.BadInput, match=r"^resume needs run"):
        edgekd.distill(resume=True, progress=False)
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--teacher-epochs", "0")
    assert r.code == 2 and "--teacher-epochs 0: must be >= 1" in r.err
    r = edgekd_main("distill", "--resume")
    assert r.code == 2 and "--resume needs --run" in r.err
    r = edgekd_main("select-student", "--target", "cpu-arm", "--epochs", "3", "--short-epochs", "5")
    assert r.code == 2 and "--short-epochs 5: must be in 1..3 (--epochs)" in r.err


def test_flag_text_maps_each_named_parameter_once():
    from edgekd.cli import flag_text

    e = edgekd.BadInput("resume: teacher_weights [1.0] (run has None), methods ['soft'] (run has ['ce'])",
                        params=["resume", "teacher_weights", "methods"])
    assert flag_text(e) == "--resume: --teacher-weight [1.0] (run has None), --method ['soft'] (run has ['ce'])"
    assert flag_text(edgekd.BadInput("epochs_x 1: epochs", params=["epochs"])) == "epochs_x 1: --epochs"


# ---------------------------------------------------------------- the CLI is a thin layer over the API
CLI_TO_API = {"method": "methods", "only": "methods", "teacher_weight": "teacher_weights",
              "student_tap": "student_taps", "teacher_tap": "teacher_taps", "loss_option": "loss_options",
              "name": "name"}
CLI_ONLY = {"as_json", "nproc", "nnodes", "rdzv_endpoint", "node_rank"}


def _commands():
    import typer

    from edgekd import cli

    group = typer.main.get_command(cli.app)
    return {name: cmd for name, cmd in group.commands.items() if name != "runner"}


def _api_calls(fn_node: ast.FunctionDef) -> list[ast.Call]:
    return [n for n in ast.walk(fn_node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "api"]


def test_every_command_calls_one_api_function_by_keyword():
    tree = ast.parse((REPO / "edgekd" / "cli.py").read_text())
    fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name, cmd in _commands().items():
        node = fns[cmd.callback.__name__]
        calls = _api_calls(node)
        called = {c.func.attr for c in calls}
        expected = {"list_targets", "load_target"} if name == "targets" else {name.replace("-", "_")}
        assert called == expected, f"{name}: calls {called}"
        assert len(calls) == len(expected), f"{name}: {len(calls)} API calls"
        assert all(not c.args for c in calls), f"{name}: positional arguments to the API"


def test_cli_defaults_equal_the_api_defaults():
    for name, cmd in _commands().items():
        fn = getattr(api, "list_targets" if name == "targets" else name.replace("-", "_"))
        sig = inspect.signature(fn if name != "targets" else api.load_target).parameters
        for p in cmd.params:
            key = CLI_TO_API.get(p.name, p.name)
            if p.name in CLI_ONLY or key not in sig:
                continue
            api_default = sig[key].default
            if p.default is None or api_default is inspect.Parameter.empty:
                continue  # "not given": the API's default applies
            if isinstance(api_default, (tuple, list)):
                api_default = list(api_default)
            cli_default = list(p.default) if isinstance(p.default, (tuple, list)) else p.default
            assert cli_default == api_default or str(cli_default) == str(api_default), \
                f"{name} --{p.name}: CLI {cli_default!r} vs API {api_default!r}"


# ---------------------------------------------------------------- the README example
@pytest.mark.integration
def test_readme_from_python_example_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "artifacts" / "latest" / "cpu-arm" / "manifest.json").is_file()
    assert "cpu-arm" in proc.stdout


# ---------------------------------------------------------------- provenance
def test_host_cpu_reads_model_and_isa_flags(tmp_path):
    from edgekd.provenance import host_cpu

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8\n\n"
                   "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n")
    got = host_cpu(x86)
    assert got["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert got["flags"] == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx512_bf16": True, "amx": True,
                            "neon": False}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32\n"
                   "CPU implementer\t: 0x41\n")
    assert host_cpu(arm)["flags"] == {"avx2": False, "avx512f": False, "avx512_vnni": False, "avx512_bf16": False,
                                      "amx": False, "neon": True}
    assert host_cpu(tmp_path / "missing")["flags"] is None


def test_provenance_names_the_process_group(monkeypatch):
    from edgekd import provenance, ranks

    class Group:  # what torch.distributed answers inside a 2-process gloo run
        def get_backend(self):
            return "gloo"

        def get_world_size(self):
            return 2

    monkeypatch.setattr(ranks, "_dist", lambda: Group())
    got = provenance.provenance(device="cpu")
    assert (got["world_size"], got["backend"], got["device"]) == (2, "gloo", "cpu")


def test_report_writes_the_page(tiny_run, tmp_path):
    out = api.report(runs=[tiny_run.run], out=tmp_path / "page.html")
    assert isinstance(out, api.ReportResult) and out.path == tmp_path / "page.html" and out.path.stat().st_size > 0
    assert out.to_json()["path"] == str(out.path)
