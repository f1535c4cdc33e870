"""The README's label-free worked example (issue 20, item 7), run verbatim at small scale: a
non-square ImageFolder with an unlabeled pool, torchvision's mobilenet_v3_small exported to ONNX
with a Softmax at the end, check-teacher, distil with no training label into a 16x64 student
for cpu-arm, export, bench."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

MARKER = "<!-- labelfree-example -->"
SMALL = {"N": "10", "N_TEST": "4", "POOL": "12", "STEPS": "3", "EPOCHS": "1", "SEEDS": "1", "BENCH_SECONDS": "0.05"}


def labelfree_example() -> str:
    """The first bash block after the marker in README.md."""
    after = (REPO / "README.md").read_text().split(MARKER, 1)[1]
    return after.split("```bash\n", 1)[1].split("\n```", 1)[0]


def test_block_is_found_and_uses_its_sizes():
    block = labelfree_example()
    for name in SMALL:
        assert f'"${{{name}:=' in block, name   # every size the test shrinks is one the block reads
    assert "--labeled-fraction 0 " in block and "--unlabeled pool" in block and "--input-size 16x64" in block
    assert "Softmax" in block and "check-teacher" in block


@pytest.mark.integration
def test_readme_labelfree_example(tmp_path):
    env = {**os.environ, **SMALL, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", labelfree_example()], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "pool").iterdir())) == 12 and not any(p.is_dir() for p in (tmp_path / "pool").iterdir())
    assert "probabilities" in r.stdout   # check-teacher says what the teacher returns
    assert re.search(r"student alone\D{0,5}\d", r.stdout) is None   # no table shows a student-alone figure
    run = tmp_path / "runs" / "labelfree"
    s = json.loads((run / "distill.json").read_text())
    assert s["labeled_fraction"] == 0 and s["teacher"]["outputs"] == "probabilities"
    assert s["teacher"]["view"]["input_size"] == [32, 128] and s["student"]["view"]["input_size"] == [16, 64]
    assert s["accuracy"]["student_alone"] is None and 0 <= s["accuracy"]["agreement"]["mean"] <= 1
    assert s["agreement"]["n"] >= 1 and "student_alone" not in s["agreement"]   # the pool's held-out share
    assert s["verdict"]["distillation"] == "label-free"
    assert not (run / "student_alone.pt").exists()
    m = json.loads((run / "cpu-arm" / "manifest.json").read_text())
    assert m["model"]["inputs"][0]["shape"] == ["batch", 3, 16, 64]
    assert (m["model"]["preprocessing"]["height"], m["model"]["preprocessing"]["width"]) == (16, 64)
    assert m["accuracy"]["student_alone"] is None and 0 <= m["accuracy"]["agreement"] <= 1
    assert m["teacher"]["outputs"] == "probabilities"
    assert m["bench"]["latency_ms"]["p50"] > 0 and m["parity"]["passed"]


# ---------------------------------------------------------------- two bugs the example found, checked fast
@pytest.fixture(scope="module")
def fixed_teacher(tmp_path_factory):
    """32x32 ImageFolder data, a flat pool, and an ONNX teacher whose graph fixes 16x16 (a Softmax head)."""
    import shutil

    import torch

    from helpers.imagegen import export_onnx_teacher, make_imagefolder, tiny_teacher

    root = tmp_path_factory.mktemp("fixed")
    data = make_imagefolder(root / "images", n=10, size=32)
    pool = root / "pool"
    pool.mkdir()
    for i, f in enumerate(sorted(make_imagefolder(root / "more", n=4, size=32, seed=1).rglob("*.png"))):
        shutil.copy(f, pool / f"{i:03d}.png")
    torch.set_num_threads(1)
    onnx = export_onnx_teacher(tiny_teacher(data, size=16, epochs=5), root / "t16.onnx", head="probabilities")
    return {"data": f"imagefolder:{data}", "pool": pool, "onnx": onnx}


def test_check_teacher_takes_the_view_an_onnx_teacher_fixes(fixed_teacher, edgekd_main):
    """Was exit 2 ("the teacher's view is 32x32; pass --teacher-input-size 16x16") although the
    README says a fixed ONNX input sets the teacher's view, as it did in distill."""
    r = edgekd_main("check-teacher", "--teacher", str(fixed_teacher["onnx"]), "--data", fixed_teacher["data"],
                    "--teacher-mean", "0.5", "--teacher-std", "0.5", "--json")
    assert r.code == 0, r.err
    check = json.loads(r.out)["teachers"][0]
    assert check["view"]["input_size"] == [16, 16] and check["returns"]["kind"] == "probabilities"
    r = edgekd_main("check-teacher", "--teacher", str(fixed_teacher["onnx"]), "--data", fixed_teacher["data"],
                    "--teacher-input-size", "24")
    assert r.code == 2 and "16x16" in r.err   # a conflicting size is still refused


def test_label_free_table_with_a_pool(fixed_teacher, tmp_path, edgekd_main):
    """Was a KeyError ('student_alone') printing distill's table: the pool's agreement line read the
    control, which a label-free run has not."""
    r = edgekd_main("distill", "--data", fixed_teacher["data"], "--unlabeled", str(fixed_teacher["pool"]),
                    "--labeled-fraction", "0", "--input-size", "16x8", "--teacher", str(fixed_teacher["onnx"]),
                    "--teacher-mean", "0.5", "--teacher-std", "0.5", "--student", "tiny-cnn", "--epochs", "1",
                    "--seeds", "1", "--run", str(tmp_path / "run"), "--no-progress")
    assert r.code == 0, r.err
    assert "held-out unlabeled images: distilled" in r.out and "alone" not in r.out.split("held-out unlabeled")[1][:20]
