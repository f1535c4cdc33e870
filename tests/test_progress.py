"""edgekd.progress: tqdm on a terminal, one line per stage/epoch off it, nothing when quiet."""

from __future__ import annotations

import pytest

from edgekd import progress


@pytest.fixture(autouse=True)
def _loud():
    before = progress.is_quiet()
    progress.set_quiet(False)
    yield
    progress.set_quiet(before)


def test_off_a_terminal_one_line_per_epoch_with_eta(capsys) -> None:
    p = progress.Progress("kd/seed0", total=3, unit="epoch")
    for _ in range(3):
        p.update(1, line=True, loss=0.5, val=0.9)
    p.close()
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert out.out == "" and len(lines) == 3
    assert lines[0].startswith("kd/seed0: epoch 1/3 loss 0.5 val 0.9") and "ETA" in lines[0]
    assert "ETA" not in lines[-1] and "\r" not in out.err


def test_a_bar_off_a_terminal_prints_one_line_when_it_ends(capsys) -> None:
    assert list(progress.bar(range(500), desc="parity", unit="batch")) == list(range(500))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("parity: 500 batch in")


def test_bar_with_lines_prints_one_line_per_item(capsys) -> None:
    list(progress.bar(["a", "b"], desc="rungs", unit="rung", lines=True))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" |")[0] for line in lines] == ["rungs: rung 1/2", "rungs: rung 2/2"]


@pytest.mark.parametrize("how", ["set_quiet", "quieted", "disabled"])
def test_quiet_silences_everything(how: str, capsys) -> None:
    def work():
        progress.stage("teacher: training")
        list(progress.bar(range(3), desc="x", enabled=how != "disabled"))
        p = progress.Progress("y", total=2, enabled=how != "disabled")
        p.update(1, line=True)
        p.close("done")

    if how == "set_quiet":
        progress.set_quiet(True)
        work()
    elif how == "quieted":
        with progress.quieted():
            work()
        assert not progress.is_quiet()  # restored afterwards
    else:
        list(progress.bar(range(3), desc="x", enabled=False))
        progress.Progress("y", total=2, enabled=False).update(1, line=True)
    assert capsys.readouterr().err == ""


def test_on_a_terminal_it_draws_a_tqdm_bar_with_eta(monkeypatch, capsys) -> None:
    monkeypatch.setattr(progress, "_on_terminal", lambda: True)
    p = progress.Progress("teacher", total=4, unit="epoch")
    assert p.tqdm is not None
    p.update(2, line=True, loss=1.0)
    p.close()
    err = capsys.readouterr().err
    assert "teacher" in err and "2/4" in err  # tqdm's own rendering (rate and ETA in its bar)


def test_distill_off_a_terminal_prints_stage_and_epoch_lines(tmp_path, edgekd_main, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["distill", "--run", tmp_path / "r", "--epochs", "2", "--teacher-epochs", "1", "--seeds", "1",
            "--teacher", "cnn-small", "--student", "tiny-cnn"]
    r = edgekd_main(*args)
    assert r.code == 0, r.err
    lines = r.err_lines
    assert any(line.startswith("teacher: training cnn-small") for line in lines)
    assert [line.split(" loss")[0] for line in lines if line.startswith("kd/seed0: ")] == [
        "kd/seed0: epoch 1/2", "kd/seed0: epoch 2/2"]
    assert any(line.startswith("teacher cache:") for line in lines)
    q = edgekd_main(*args[:2], tmp_path / "q", *args[3:], "--quiet")
    assert q.code == 0 and q.err_lines == [], q.err
