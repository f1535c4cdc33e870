"""The run folder as a typed contract (edgekd/run): round trips, one-line errors, schema 0, and `amend`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgekd.errors import BadInput
from edgekd.run import bench as run_bench
from edgekd.run import manifest as run_manifest
from edgekd.run.schema import SCHEMA_VERSION

REPO = Path(__file__).resolve().parent.parent

# What export wrote before the contract existed (schema 0: no schema_version), keys beyond the typed ones included.
LEGACY_MANIFEST = {
    "edgekd_version": "0.1.0", "target": "cpu-arm",
    "target_profile": {"name": "cpu-arm", "path": "/nowhere/cpu-arm.toml"},
    "model": {"path": "model.onnx", "sha256": "ab" * 32, "bytes": 1234, "opset": 17, "params": 99,
              "inputs": [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}],
              "outputs": [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}],
              "preprocessing": {"mean": [0.0], "std": [1.0]}, "labels": ["0", "1"], "exporter": "torchscript"},
    "golden": {"path": "golden.npz", "sha256": "cd" * 32, "bytes": 10, "n": 64},
    "ops": {"used": ["Conv", "Relu"], "unsupported": [], "coverage": 1.0, "partition": {"ran": True, "passed": True}},
    "parity": {"n": 64, "max_abs_diff": 1e-6, "max_rel_diff": 1e-5, "top1_agreement": 1.0, "passed": True,
               "atol": None},
    "views": {"student": None, "teacher": None},
    "accuracy": {"teacher": 0.9, "student_alone": 0.7, "student": 0.8, "student_onnx": 0.8, "n_test": 64},
    "recommended": "fp32",
    "checks": {"passed": True, "failures": []},
    "deployable": True,
}

FP32 = {"provider": "CPUExecutionProvider", "threads": 1, "latency_ms": {"p50": 0.1, "p90": 0.2, "p99": 0.3},
        "peak_rss_mb": 50.0, "init_ms": 3.0, "first_run_ms": 1.0, "golden": {"passed": True, "top1_agreement": 1.0}}
BENCH = {"runner": "local", "target": "cpu-arm", "fp32": FP32, "int8": None, "recommended": "fp32", "notes": [],
         "budget": {"passed": True, "checks": []}, "host": {"cpu": "x"}}


def _write(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def test_legacy_manifest_loads_and_round_trips_exactly(tmp_path):
    m = run_manifest.load_manifest(_write(tmp_path / "cpu-arm" / "manifest.json", LEGACY_MANIFEST))
    assert m.schema_version is None  # schema 0
    assert m.parity.max_abs_diff == 1e-6 and m.model.bytes == 1234 and m.golden.extra == {"n": 64}
    assert m.extra["views"] == {"student": None, "teacher": None}  # untyped keys are kept
    assert m.to_json() == LEGACY_MANIFEST


def test_bench_file_round_trips_and_picks_the_recommended_measure():
    b = run_bench.from_json(BENCH)
    assert b.to_json() == BENCH
    assert b.int8 is None and b.chosen.p("p90") == 0.2 and b.budget.passed


def test_missing_field_is_one_line_naming_file_and_field(tmp_path):
    broken = copy.deepcopy(LEGACY_MANIFEST)
    del broken["parity"]["max_abs_diff"]
    path = _write(tmp_path / "manifest.json", broken)
    with pytest.raises(BadInput) as e:
        run_manifest.load_manifest(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "'parity.max_abs_diff' missing" in msg
    assert f"written by schema 0, this edgekd reads {SCHEMA_VERSION}" in msg


def test_missing_nested_field_of_bench_file_names_it():
    broken = copy.deepcopy(BENCH)
    del broken["fp32"]["latency_ms"]
    with pytest.raises(BadInput, match=r"file b\.json: field 'fp32\.latency_ms' missing"):
        run_bench.from_json(broken, "b.json")


def test_other_schema_version_is_bad_input(tmp_path):
    path = _write(tmp_path / "manifest.json", {**LEGACY_MANIFEST, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(BadInput, match=rf"{path}: field 'schema_version' is {SCHEMA_VERSION + 1}"):
        run_manifest.load_manifest(path)


def test_mistyped_field_is_bad_input():
    with pytest.raises(BadInput, match=r"field 'parity\.passed' is str, not bool"):
        run_manifest.from_json({**LEGACY_MANIFEST, "parity": {**LEGACY_MANIFEST["parity"], "passed": "yes"}}, "m")


def test_amend_stamps_the_schema_and_keeps_everything(tmp_path):
    path = _write(tmp_path / "manifest.json", LEGACY_MANIFEST)
    m = run_manifest.amend(path, across_targets={"targets": ["cpu-arm"]})
    on_disk = json.loads(path.read_text())
    assert on_disk == m.to_json() and on_disk["schema_version"] == SCHEMA_VERSION
    assert {k: v for k, v in on_disk.items() if k not in ("schema_version", "across_targets")} == LEGACY_MANIFEST
    assert run_manifest.load_manifest(path) == m


def test_failed_parity_cannot_be_made_deployable_by_a_bench_merge(tmp_path):
    failed = copy.deepcopy(LEGACY_MANIFEST)
    failed["parity"]["passed"] = False
    failed["checks"] = {"passed": True, "failures": []}  # even were the export verdict wrong
    path = _write(tmp_path / "manifest.json", failed)
    m = run_manifest.amend(path, bench=FP32 | {"runner": "local"}, budget={"passed": True, "checks": []},
                           recommended="fp32", deployable=True)
    assert m.deployable is False and json.loads(path.read_text())["deployable"] is False
    assert "parity failed" in m.failed()


@pytest.mark.parametrize("sections, reason", [
    ({"budget": {"passed": False, "checks": []}}, "budget failed"),
    ({"bench": FP32 | {"runner": "local", "golden": {"passed": False}}}, "golden check of the fp32 model failed"),
    ({"ops": {"used": ["Foo"], "unsupported": [{"op": "Foo"}]}}, "audit failed"),
    ({"checks": {"passed": False, "failures": ["parity: x"]}}, "export checks failed"),
])
def test_deployable_follows_each_part(tmp_path, sections, reason):
    path = _write(tmp_path / "manifest.json", LEGACY_MANIFEST)
    assert run_manifest.amend(path).deployable is True
    m = run_manifest.amend(path, **sections)
    assert m.deployable is False and m.failed() == [reason]


def test_int8_golden_judges_an_int8_recommendation(tmp_path):
    variant = {"path": "model.int8.onnx", "sha256": "ef" * 32, "bytes": 10, "parity": {"passed": True},
               "golden": {"passed": False}}
    path = _write(tmp_path / "manifest.json", {**LEGACY_MANIFEST, "variants": {"int8": variant}})
    assert run_manifest.amend(path, recommended="fp32").deployable is True  # fp32 deployed: int8's miss reported
    assert run_manifest.amend(path, recommended="int8").deployable is False


def test_amend_new_checks_what_export_would_write(tmp_path):
    incomplete = {k: v for k, v in LEGACY_MANIFEST.items() if k != "accuracy"}
    path = tmp_path / "manifest.json"
    with pytest.raises(BadInput, match="field 'accuracy' missing"):
        run_manifest.amend(path, new=True, **incomplete)
    assert not path.exists()  # nothing written


def test_docs_run_folder_is_current():
    from edgekd.run.docs import render

    text = render()
    for name in ("parity.max_abs_diff", "deployable", "variants.<name>.golden", "fp32.latency_ms", "schema_version"):
        assert f"| `{name}` |" in text
    committed = (REPO / "docs" / "run-folder.md").read_text(encoding="utf-8")
    assert committed == text, "docs/run-folder.md is stale: run `python scripts/gen_run_docs.py`"


LEGACY_DISTILL = {
    "data": {"name": "digits", "num_classes": 10, "input_shape": [1, 8, 8], "labels": list("0123456789"),
             "preprocessing": {"mean": [0.0], "std": [1.0]}, "split": {"method": "stratified"}},
    "target": "cpu-arm", "methods": ["soft:0.7", "ce:0.3"],
    "teacher": {"arch": "cnn-small", "view": {"input_size": [8, 8]}},
    "student": {"arch": "small-cnn-s", "params": 10, "chosen_seed": 1, "view": {"input_size": [8, 8]}},
    "accuracy": {"teacher": 0.9, "student_alone": {"mean": 0.7, "std": 0.0, "n": 2},
                 "student": {"mean": 0.8, "std": 0.0, "n": 2}},
    "verdict": {"recommended_student": "student.pt"},
    "per_seed": [{"seed": 0, "student": 0.79, "student_alone": 0.7},
                 {"seed": 1, "student": 0.81, "student_alone": 0.7}],
    "provenance": {"world_size": 1, "backend": None},
}


def test_legacy_distill_summary_round_trips_and_names_its_kept_seed(tmp_path):
    from edgekd.run import distill as run_distill

    d = run_distill.load_distill(_write(tmp_path / "distill.json", LEGACY_DISTILL))
    assert d.to_json() == LEGACY_DISTILL and d.accuracy.teacher == 0.9 and d.chosen()["student"] == 0.81
    written = run_distill.write_distill(tmp_path / "again.json", LEGACY_DISTILL)
    assert json.loads((tmp_path / "again.json").read_text()) == {**LEGACY_DISTILL, "schema_version": SCHEMA_VERSION}
    assert run_distill.load_distill(tmp_path / "again.json") == written


def test_distill_summary_without_the_kept_seed_or_a_field_is_bad_input(tmp_path):
    from edgekd.run import distill as run_distill

    lost = {**LEGACY_DISTILL, "per_seed": [{"seed": 0}]}
    with pytest.raises(BadInput, match=r"field 'per_seed' has no row for student.chosen_seed 1"):
        run_distill.from_json(lost, "d.json").chosen("d.json")
    no_teacher = copy.deepcopy(LEGACY_DISTILL)
    del no_teacher["accuracy"]["teacher"]
    with pytest.raises(BadInput, match=r"file d.json: field 'accuracy.teacher' missing; written by schema 0"):
        run_distill.from_json(no_teacher, "d.json")


def test_metrics_line_keeps_the_schema_keys_in_order_and_checks_them():
    from edgekd.run.metrics import KEYS, line
    from edgekd.train.metrics import KEYS as WRITTEN

    row = {"phase": "kd/seed0", "stage": "main", "epoch": 1, "epochs": 2, "loss": 0.5, "terms": {"ce": 0.5},
           "val_acc": None, "lr": 0.003, "seconds": 1.0, "images_per_s": 10.0, "time": 1.0, "peers_val_acc": [0.1]}
    assert WRITTEN == KEYS and tuple(line(row).to_json()) == KEYS  # the summary row's extra key is dropped
    with pytest.raises(BadInput, match=r"file m.jsonl: field 'epoch' is str, not int"):
        line({**row, "epoch": "1"}, "m.jsonl")
    with pytest.raises(BadInput, match=r"field 'lr' missing"):
        line({k: v for k, v in row.items() if k != "lr"})


def test_an_optional_field_written_as_null_round_trips():
    with_nulls = {**LEGACY_MANIFEST, "bench": None, "variants": None}
    m = run_manifest.from_json(with_nulls)
    assert m.bench is None and m.variants is None and m.to_json() == with_nulls
    assert run_manifest.from_json(LEGACY_MANIFEST).to_json() == LEGACY_MANIFEST  # and absent stays absent
