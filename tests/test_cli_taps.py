"""Feature taps and loss options from the command line: bad ones are exit 2, one line, before any run folder."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = ["--epochs", "1", "--teacher-epochs", "1", "--seeds", "1", "--teacher", "cnn-small", "--no-progress"]

CASES = [
    (["--method", "cosine", "--student-tap", "hidden=poool"], "nearest module names: pool"),
    (["--method", "fitnet", "--teacher-tap", "feature_map=feature"], "nearest module names: features"),
    (["--method", "cosine", "--loss-option", "cosine.project=false"], "project=False"),
    (["--method", "soft", "--loss-option", "fitnet.kernel=3"], "no --method fitnet"),
    (["--method", "soft", "--student-tap", "hidden=pool"], "no --method reads 'hidden'"),
    (["--method", "cosine", "--student-tap", "brain=pool"], "unknown role"),
    (["--method", "cosine", "--student-tap", "hidden"], "expected ROLE=MODULE"),
    (["--method", "fitnet", "--loss-option", "fitnet.kernal=3"], "bad option"),
]


@pytest.mark.parametrize("args,fragment", CASES, ids=[c[1][:24] for c in CASES])
def test_bad_taps_and_options_are_exit_2_before_any_run(edgekd_main, tmp_path: Path, monkeypatch, args,
                                                        fragment) -> None:
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", *TINY, "--run", "r", *args)
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.err
    assert not (tmp_path / "r").exists() and not (tmp_path / "artifacts").exists()


def test_a_named_tap_and_a_loss_option_train(edgekd_main, tmp_path: Path, monkeypatch) -> None:
    """FitNets on the teacher's first conv stage (not the default) with a 3×3 regressor."""
    import json

    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", *TINY, "--run", "r", "--student", "tiny-cnn", "--method", "fitnet:0.5",
                    "--method", "ce:0.5", "--teacher-tap", "feature_map=features.1", "--loss-option",
                    "fitnet.kernel=3")
    assert r.code == 0, r
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["teacher_taps"] == {"feature_map": "features.1"}
    assert cfg["loss_options"] == {"fitnet": {"kernel": 3}}
