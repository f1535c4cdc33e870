"""config.json as a typed file of the run contract (`edgekd.run.config`), and `--config RUN/config.json`
replaying a run exactly."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from edgekd import options
from edgekd.errors import BadInput
from edgekd.run.config import RunConfig, load_config, recipe, write_config
from edgekd.run.schema import SCHEMA_VERSION
from edgekd.train.config import DistillConfig

TINY = ["--data", "digits", "--epochs", "1", "--teacher-epochs", "1", "--seeds", "1", "--teacher", "cnn-small",
        "--no-progress"]


def _written(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "config.json"
    write_config(path, asdict(DistillConfig(teacher=("cnn", "cnn-small"), input_size=(8, 8))),
                 {"input_shape": [1, 8, 8]}, **extra)
    return path


def test_it_holds_every_distill_option_and_reads_back_what_it_wrote(tmp_path):
    path = _written(tmp_path, student_net={"width": 8})
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert set(options.config_fields()) | {"data_info", "schema_version", "student_net"} == set(raw)
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig) and cfg.to_json() == raw
    assert cfg.teacher == ["cnn", "cnn-small"] and cfg.input_size == [8, 8]
    assert cfg.extra == {"student_net": {"width": 8}}


def test_its_recipe_is_the_experiment_without_where_and_how_it_ran(tmp_path):
    got = recipe(load_config(_written(tmp_path)))
    assert set(got) == set(options.recipe_keys("distill")) and not {"run", "resume", "progress"} & set(got)


@pytest.mark.parametrize("edit, says", [
    (lambda d: d.pop("epochs"), "field 'epochs' missing; written by schema 1"),
    (lambda d: d.update(schema_version=99), "field 'schema_version' is 99"),
    (lambda d: d.update(seeds="3"), "field 'seeds' is str, not int"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_field(tmp_path, edit, says):
    path = _written(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BadInput) as e:
        load_config(path)
    assert str(e.value).startswith(f"file {path}: ") and says in str(e.value) and "\n" not in str(e.value)


def test_writing_checks_the_options(tmp_path):
    with pytest.raises(BadInput, match="field 'epochs' is str"):
        write_config(tmp_path / "config.json", {**asdict(DistillConfig()), "epochs": "3"}, {})
    assert not (tmp_path / "config.json").exists()


def test_replaying_a_run_from_its_config_json_gives_the_same_config_and_accuracy(edgekd_main, tmp_path, monkeypatch):
    """A tiny digits distill, then `distill --config A/config.json --run B`: the same resolved options and,
    training being deterministic on CPU for a seed, the same accuracies."""
    monkeypatch.chdir(tmp_path)
    first = edgekd_main("distill", *TINY, "--run", "a", "--json")
    assert first.code == 0, first.err
    again = edgekd_main("distill", "--config", "a/config.json", "--run", "b", "--no-progress", "--json")
    assert again.code == 0, again.err

    def config(run: str) -> dict:
        data = json.loads((tmp_path / run / "config.json").read_text())
        assert data.pop("run") == run
        return data

    assert config("a") == config("b")
    acc = [json.loads((tmp_path / run / "distill.json").read_text())["accuracy"] for run in ("a", "b")]
    assert acc[0] == acc[1] and acc[0]["student"]["n"] == 1
    # a run folder stands for its config.json, and a flag still wins over the file it replays
    from edgekd.recipe import read_recipe

    assert read_recipe(tmp_path / "a", "distill") == read_recipe(tmp_path / "a" / "config.json", "distill")
    override = edgekd_main("distill", "--config", "a/config.json", "--run", "c", "--seeds", "0")
    assert override.code == 2 and "--seeds 0: must be >= 1" in override.err


def test_compare_takes_a_run_config_s_options_but_not_its_methods(edgekd_main, tmp_path, monkeypatch):
    """compare --config RUN/config.json: the run's data, teacher, student and budget; its --method rows are
    compare's own (a distill run's `soft:0.7` is no row), so the config.json's methods are not taken."""
    from edgekd import api

    path = tmp_path / "config.json"
    write_config(path, asdict(DistillConfig(teacher="cnn-small", epochs=2, seeds=1, lr=0.01)), {})
    seen = {}
    monkeypatch.setattr(api, "compare", lambda **kw: (seen.update(kw), exit(0)))
    assert edgekd_main("compare", "--config", path).code == 0
    assert (seen["teacher"], seen["epochs"], seen["seeds"], seen["methods"]) == (["cnn-small"], 2, 1, None)
    assert "lr" not in seen
