"""ExperimentConfig: one declaration per setting, checked when built, recorded as it ran, and
one ``deepfeat experiment`` option per field. Nothing here reads an image."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from deepfeat.cli.experiment_options import config_from_args, option_flags
from deepfeat.cli.main import EXIT_USAGE, build_parser, main
from deepfeat.exceptions import InvalidParameterError
from deepfeat.pipelines.experiment import run_experiment
from deepfeat.pipelines.experiment_config import ExperimentConfig

FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}


@pytest.mark.parametrize(("name", "bad"), [
    ("repeats", 0), ("repeats", True), ("repeats", 1.5), ("shots", "0,1"), ("shots", ""),
    ("test_size", 0), ("test_size", 1.0), ("near_duplicate_threshold", 1.2), ("targets", "0.8,1.5"),
    ("max_per_class", 0), ("pixel_size", 0), ("search", "medium"), ("select", "best"),
    ("strategies", "finetune"), ("baselines", "pixel"), ("backbones", ""), ("drop_leaked", "yes"),
    ("featurizer_options", ["device"]), ("text_column", ""), ("seed", "zero"), ("src", None),
])
def test_a_bad_value_raises_naming_the_field(name, bad):
    settings = {"src": "data", "out": "report", name: bad}
    with pytest.raises(InvalidParameterError) as info:
        ExperimentConfig(**settings)
    assert str(info.value).startswith(name), str(info.value)
    assert isinstance(info.value, ValueError)


def test_good_values_are_normalised_once():
    """Negative control for the test above: the same fields take their good values."""
    cfg = ExperimentConfig("data", "report", repeats=2, shots="5,1,all", test_size=0.25,
                           near_duplicate_threshold=0.9, targets="0.8,0.9", max_per_class=10,
                           search="full", select="auto", strategies="frozen,finetune",
                           baselines="random,pixels", backbones="a,b[random]", layers="blocks.2,blocks.4",
                           drop_leaked=True, featurizer_options={"device": "cpu"})
    assert cfg.shots == (1, 5, "all") and cfg.targets == (0.8, 0.9)
    assert cfg.strategies == ("frozen", "finetune") and cfg.baselines == ("random", "pixels")
    assert cfg.backbones == ("a", "b[random]") and cfg.layers == ("blocks.2", "blocks.4")
    assert ExperimentConfig("d", "r", layers="auto").layers == "auto"
    assert ExperimentConfig("d", "r").featurizer_options == {}


def test_test_src_and_test_size_exclude_each_other():
    with pytest.raises(InvalidParameterError, match="test_src and test_size"):
        ExperimentConfig("data", "report", test_src="test", test_size=2)


def test_the_config_is_frozen_and_replace_checks_again():
    cfg = ExperimentConfig("data", "report")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.repeats = 5  # type: ignore[misc]
    assert cfg.replace(repeats=5).repeats == 5
    with pytest.raises(InvalidParameterError, match="^repeats"):
        cfg.replace(repeats=0)


def test_the_recorded_config_builds_the_same_config():
    cfg = ExperimentConfig("data", "report", shots=(1, "all"), layers="auto", test_size=10,
                           finetune_options={"epochs": 2})
    assert ExperimentConfig(**cfg.to_dict()) == cfg
    assert ExperimentConfig(**cfg.replace(layers=("a",)).to_dict()).layers == ("a",)


def test_run_experiment_takes_exactly_the_config_fields(tmp_path):
    """The wrapper declares no setting of its own: a typo is refused before anything is written."""
    params = inspect.signature(run_experiment).parameters
    assert set(params) == {"src", "out", "search_factory", "verbose", "settings"}
    with pytest.raises(TypeError, match="repeat"):
        run_experiment(tmp_path / "data", tmp_path / "out", repeat=2)
    with pytest.raises(InvalidParameterError, match="^repeats"):
        run_experiment(tmp_path / "data", tmp_path / "out", repeats=0)
    assert list(tmp_path.iterdir()) == []


def _experiment_parser():
    parser, _ = build_parser("experiment")
    return next(a for a in parser._actions if a.dest == "command").choices["experiment"]


#: A valid value other than the default, as typed on the command line, and as the config holds it.
CHANGED = {
    "out": ("r2", "r2"), "backbones": ("efficientnet_lite0,efficientnet_lite0[random]",
                                       ("efficientnet_lite0", "efficientnet_lite0[random]")),
    "layers": ("blocks.2", ("blocks.2",)), "shots": ("2,1", (1, 2)), "repeats": ("4", 4),
    "test_src": ("t", "t"), "test_size": ("0.5", 0.5), "drop_leaked": (None, True),
    "baselines": ("random", ("random",)), "near_duplicate_threshold": ("0.9", 0.9),
    "targets": ("0.7", (0.7,)), "max_per_class": ("9", 9), "pixel_size": ("16", 16), "seed": ("3", 3),
    "search": ("full", "full"), "select": ("auto", "auto"), "strategies": ("frozen,finetune", ("frozen", "finetune")),
    "text_column": ("body", "body"), "title": ("T", "T"),
}
#: Fields set by other options (see cli.experiment_options.OPTION_NAMES).
ELSEWHERE = {"src", "cache", "featurizer_options", "finetune_options"}


def test_every_config_field_is_one_option_and_reaches_the_config():
    """A field with no option, or two, fails here; so does one parsed and then dropped."""
    sub = _experiment_parser()
    flags = [s for a in sub._actions for s in a.option_strings]
    assert set(CHANGED) | ELSEWHERE == set(FIELDS), "a new field: add it to CHANGED (or ELSEWHERE)"
    for name, (text, want) in CHANGED.items():
        flag = option_flags(name)[0]
        assert flags.count(flag) == 1, (name, flag)
        argv = ["src", flag] if text is None else ["src", flag, text]
        cfg = config_from_args(sub.parse_args(argv))
        assert getattr(cfg, name) == want, (name, getattr(cfg, name), want)
        assert want != FIELDS[name].default


def test_defaults_of_the_command_are_the_configs():
    cfg = config_from_args(_experiment_parser().parse_args(["photos/"]))
    assert cfg == ExperimentConfig("photos/", "reports/photos")


@pytest.mark.parametrize(("argv", "flag"), [
    (["--pixel-size", "0"], "--pixel-size"), (["--select", "best"], "--select"),
    (["--seed", "x"], "--seed"), (["--repeats", "2.5"], "--repeats"),
])
def test_a_bad_option_exits_2_with_one_line(argv, flag, tmp_path, capsys):
    code = main(["experiment", str(tmp_path / "src"), "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1 and flag in err[0], err
    assert list(tmp_path.iterdir()) == []
