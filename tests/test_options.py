"""Each option declared once (`edgekd.options`): the commands, the API and DistillConfig agree with the
table; ranges and choices come from it; `--config` recipes and a run's config.json are read against it."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from edgekd import api, cli, defaults, options
from edgekd.errors import BadInput
from edgekd.train.config import DistillConfig

from helpers.agreement import api_disagreements, cli_disagreements, config_disagreements

FUNCTIONS = {"distill": api.distill, "compare": api.compare, "select-teacher": api.select_teacher,
             "select-student": api.select_student}
GROUP = typer.main.get_command(cli.app)


# ---------------------------------------------------------------- one declaration
@pytest.mark.parametrize("command", options.COMMANDS)
def test_the_command_and_the_api_agree_with_the_table(command):
    table = options.for_command(command)
    assert cli_disagreements(command, table, GROUP.commands[command]) == []
    assert api_disagreements(command, table, FUNCTIONS[command]) == []


def test_distill_config_agrees_with_the_table():
    assert config_disagreements(options.for_command("distill"), options.config_fields(), DistillConfig) == []


def test_each_command_has_each_option_once():
    for command in options.COMMANDS:
        names = [o.name for o in options.OPTIONS if command in o.commands]
        assert len(names) == len(set(names)), command
    assert {c for o in options.OPTIONS for c in o.commands} == set(options.COMMANDS)


def test_a_name_has_one_flag_everywhere_and_errors_show_it():
    flags: dict = {}
    for o in options.OPTIONS:
        flags.setdefault(o.name, set()).add(o.cli_flag)
    assert {n: f for n, f in flags.items() if len(f) > 1} == {}
    e = BadInput("teacher_weight_files: 2 files for 1 teacher", params=["teacher_weight_files"])
    assert cli.flag_text(e) == "--teacher-weights: 2 files for 1 teacher"


def _perturbed(command: str, name: str, **change) -> dict:
    table = dict(options.for_command(command))
    table[name] = dataclasses.replace(table[name], **change)
    return table


def test_the_check_sees_a_default_that_drifts():
    table = _perturbed("distill", "epochs", default=5)
    assert cli_disagreements("distill", table, GROUP.commands["distill"]) == [
        "distill --epochs: default None on the command, 5 in the table"]
    assert api_disagreements("distill", table, api.distill) == [
        "distill: keyword epochs default None in distill(), 5 in the table"]
    table = _perturbed("distill", "peers", default=3)
    assert config_disagreements(table, options.config_fields(), DistillConfig) == [
        "config: field peers default 2 in DistillConfig, 3 from the table"]


def test_the_check_sees_a_flag_a_keyword_or_a_field_that_is_missing_or_extra():
    table = dict(options.for_command("compare"))
    del table["seeds"]
    assert "compare: --seeds is on the command, not in the table" in cli_disagreements(
        "compare", table, GROUP.commands["compare"])
    assert "compare: keyword seeds of compare() is not in the table" in api_disagreements("compare", table, api.compare)
    renamed = _perturbed("compare", "seeds", flag="--seed-count")
    assert "compare: --seed-count (seeds) is in the table, not on the command" in cli_disagreements(
        "compare", renamed, GROUP.commands["compare"])
    fields = (*options.config_fields(), "warmup_steps")
    assert config_disagreements(options.for_command("distill"), fields, DistillConfig) == [
        "config: field warmup_steps is in the table, not in DistillConfig"]


def test_the_check_sees_help_type_and_repetition():
    for change, says in ((dict(help="other"), "help differs"), (dict(type=float), "type int on the command"),
                         (dict(repeatable=True), "repeatable False on the command")):
        got = cli_disagreements("distill", _perturbed("distill", "seeds", **change), GROUP.commands["distill"])
        assert len(got) == 1 and says in got[0], got


def test_an_api_function_with_its_own_default_is_caught():
    def distill(*, seeds: int = 7, lr: float = defaults.LR):  # pragma: no cover - only its signature is read
        ...
    table = {"seeds": options.get("distill", "seeds")}
    assert api_disagreements("distill", table, distill) == ["distill: keyword lr of distill() is not in the table",
                                                             "distill: keyword seeds default 7 in distill(), 3 in the "
                                                             "table"]


def test_choices_in_defaults_are_the_modules_own():
    from edgekd.data import RESIZE_POLICIES
    from edgekd.models.foreign import OUTPUT_KINDS
    from edgekd.train.losses import COMBINE_MODES

    assert defaults.TEACHER_MODES == COMBINE_MODES
    assert defaults.RESIZES == RESIZE_POLICIES
    assert defaults.TEACHER_OUTPUT_KINDS == OUTPUT_KINDS


# ---------------------------------------------------------------- ranges and choices from the table
RANGED = [(c, o) for o in options.OPTIONS for c in o.commands[:1]
          if o.minimum is not None or o.above is not None or o.maximum is not None or o.choices]


@pytest.mark.parametrize("command, opt", RANGED, ids=[f"{c}:{o.name}" for c, o in RANGED])
def test_each_range_and_choice_refuses_just_outside_and_takes_the_edge(command, opt):
    if opt.choices:
        options.check(command, {opt.name: opt.choices[-1]})
        bad = "no-such-choice"
    else:
        edge = opt.minimum if opt.minimum is not None else opt.above + 0.5 if opt.above is not None else opt.maximum
        options.check(command, {opt.name: opt.type(edge)})
        bad = opt.minimum - 1 if opt.minimum is not None else opt.above if opt.above is not None else opt.maximum + 1
    with pytest.raises(BadInput) as e:
        options.check(command, {opt.name: bad})
    assert list(e.value.params) == [opt.name] and str(e.value).startswith(f"{opt.name} ") and "\n" not in str(e.value)


def test_distill_config_validates_from_the_table():
    with pytest.raises(BadInput, match=r"labeled_fraction 1.5: must be in \[0, 1\]"):
        DistillConfig(labeled_fraction=1.5).validate()
    with pytest.raises(BadInput, match="precision 'int4': valid: auto, fp32, bf16, fp16"):
        DistillConfig(precision="int4").validate()


def test_the_cli_shows_a_bad_value_as_its_flag(edgekd_main, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--labeled-fraction", "1.5", "--no-progress")
    assert r.code == 2 and r.err_lines == ["edgekd: error: --labeled-fraction 1.5: must be in [0, 1]"], r
    assert not (tmp_path / "artifacts").exists()


def test_select_student_checks_its_own_ranges_before_any_work():
    with pytest.raises(BadInput, match="trials 0: must be >= 1"):
        api.select_student(target="cpu-arm", trials=0)


# ---------------------------------------------------------------- --config recipes
RECIPE = """data = "digits"
epochs = 5
seeds = 2
methods = ["soft:0.7", "fitnet:0.3"]
teacher = "cnn-small"
input_size = [8, 8]
[loss_options.fitnet]
kernel = 3
"""


@pytest.fixture
def captured(monkeypatch):
    """api.<command> replaced by a recorder of its keywords (the CLI's plumbing, without training)."""
    calls: dict = {}

    def fake(name):
        def record(**kw):
            calls[name] = kw
            raise SystemExit(0)
        return record

    for name in ("distill", "compare", "select_teacher", "select_student"):
        monkeypatch.setattr(api, name, fake(name))
    return calls


def test_a_recipe_gives_the_options_and_flags_win(edgekd_main, captured, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    # --seeds 3 is the default, given on the command line: it still wins over the recipe's 2
    assert edgekd_main("distill", "--config", recipe, "--epochs", "7", "--seeds", "3").code == 0
    kw = captured["distill"]
    assert (kw["epochs"], kw["seeds"], kw["data"], kw["teacher"]) == (7, 3, "digits", ["cnn-small"])
    assert kw["methods"] == ["soft:0.7", "fitnet:0.3"] and kw["loss_options"] == {"fitnet": {"kernel": 3}}
    assert kw["input_size"] == [8, 8] and kw["lr"] == defaults.LR   # not in the recipe: the default
    assert edgekd_main("distill", "--config", recipe).code == 0
    assert (captured["distill"]["epochs"], captured["distill"]["seeds"]) == (5, 2)


@pytest.mark.parametrize("command, fn, extra", [("compare", "compare", []),
                                                 ("select-teacher", "select_teacher", ["--teacher", "cnn"]),
                                                 ("select-student", "select_student", ["--target", "cpu-arm"])])
def test_the_other_commands_take_a_recipe(edgekd_main, captured, tmp_path, command, fn, extra):
    recipe = tmp_path / "r.toml"
    recipe.write_text('data = "digits"\nteacher_epochs = 2\ntemperature = 2.0\n')
    assert edgekd_main(command, "--config", recipe, *extra).code == 0
    assert (captured[fn]["teacher_epochs"], captured[fn]["temperature"]) == (2, 2.0)


@pytest.mark.parametrize("text, says", [
    ("epoch = 5\n", "key 'epoch' is not an option of distill; did you mean 'epochs'? valid keys: data, "),
    ('epochs = "5"\n', "key 'epochs' is str '5'; expected an integer"),
    ("epochs = 0\n", "key 'epochs' 0: must be >= 1"),
    ("labeled_fraction = 2\n", "key 'labeled_fraction' 2: must be in [0, 1]"),
    ('precision = "int4"\n', "key 'precision' 'int4': valid: auto, fp32, bf16, fp16"),
    ("methods = [1]\n", "key 'methods' is list [1]; expected a list of strings"),
    ("loss_options = 3\n", "key 'loss_options' is int 3; expected a table of tables"),
    ('run = "elsewhere"\n', "key 'run' is not an option of distill; set on the command line, not in a recipe"),
    ("epochs = \n", "not valid TOML"),
])
def test_a_bad_recipe_is_one_line_naming_the_file_and_key_and_nothing_is_written(edgekd_main, tmp_path, monkeypatch,
                                                                                 text, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text(text)
    r = edgekd_main("distill", "--config", "r.toml", "--no-progress")
    assert r.code == 2 and len(r.err_lines) == 1, r
    assert r.err_lines[0].startswith("edgekd: error: file r.toml: ") and says in r.err_lines[0], r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]


def test_a_missing_recipe_is_bad_input(edgekd_main, tmp_path):
    r = edgekd_main("distill", "--config", tmp_path / "none.toml")
    assert r.code == 2 and "none.toml: not found" in r.err


def test_the_api_takes_a_recipe_and_its_keywords_win(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(api, "_run_distill", lambda cfg: seen.append(cfg))
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    api.distill(config=recipe, epochs=9, progress=False)
    cfg = seen[-1]
    assert (cfg.epochs, cfg.seeds, cfg.teacher, cfg.input_size) == (9, 2, "cnn-small", (8, 8))
    assert cfg.loss_options == {"fitnet": {"kernel": 3}} and cfg.methods == ("soft:0.7", "fitnet:0.3")
