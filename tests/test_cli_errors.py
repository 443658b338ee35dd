"""Bad command-line arguments: one line naming the option, exit code 2, no work done.

Every subcommand is driven with values its options do not allow. Each must stop with
exit code 2 and a single stderr line that names the option (or the library parameter it
sets), before any image is read or featurized: the cache file and the report folder the
command was given must not exist afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import sample_photo
from PIL import Image

from deepfeat.cli.cmd_experiment import BASELINE_WORDS
from deepfeat.cli.main import EXIT_USAGE, build_parser, main
from deepfeat.featurize.featurizer import Featurizer
from deepfeat.pipelines.experiment_spaces import BASELINES, plan_spaces


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of four real photo crops each."""
    root = tmp_path_factory.mktemp("cls")
    for cls, name in (("cat", "chelsea"), ("rocket", "rocket")):
        (root / cls).mkdir()
        img = sample_photo(name)
        for j in range(4):
            Image.fromarray(img[j * 20 : j * 20 + 200, j * 20 : j * 20 + 200]).save(
                root / cls / f"{j}.png"
            )
    return root


@pytest.fixture
def no_forward_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any featurization fails the test: bad arguments must stop before it."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("featurized although an argument was bad")

    monkeypatch.setattr(Featurizer, "featurize", refuse)


_NO_CUDA = not torch.cuda.is_available()

# (subcommand, extra arguments, text the error line must contain)
BAD = [
    # featurize: runtime options (options.py) and the library's own checks
    ("featurize", ["--batch-size", "0"], "--batch-size"),
    ("featurize", ["--batch-size", "many"], "--batch-size"),
    ("featurize", ["--workers", "-2"], "--workers"),
    ("featurize", ["--device", "xpu"], "--device"),
    *([("featurize", ["--device", "cuda"], "--device")] if _NO_CUDA else []),
    ("featurize", ["--precision", "fp8"], "--precision"),
    ("featurize", ["--precision", "fp16", "--device", "cpu"], "precision"),
    ("featurize", ["--pool", "max"], "pool"),
    ("featurize", ["--pool", "median", "--layer", "blocks.2"], "--pool"),
    ("featurize", ["--backbone", "resnt50"], "--backbone"),
    ("featurize", ["--lock-timeout", "-1"], "--lock-timeout"),
    ("featurize", ["--jit", "maybe"], "--jit"),
    ("featurize", ["--storage-dtype", "float8"], "--storage-dtype"),
    ("featurize", ["--no-such-option"], "--no-such-option"),
    # fit: the head search is validated at parse time by classify's own checks
    ("fit", ["--heads", "logreg,knn"], "--heads"),
    ("fit", ["--heads", ","], "--heads"),
    ("fit", ["--heads", "logreg,logreg"], "--heads"),
    ("fit", ["--preprocessing", "l2+zca"], "--preprocessing"),
    ("fit", ["--cv", "1"], "--cv"),
    ("fit", ["--scoring", "acc"], "--scoring"),
    ("fit", ["--n-jobs", "0"], "--n-jobs"),
    ("fit", ["--class-weight", "auto"], "--class-weight"),
    ("fit", ["--batch-size", "-3"], "--batch-size"),
    ("fit", ["--workers", "some"], "--workers"),
    ("fit", ["--seed", "x"], "--seed"),
    ("fit", ["--device", "gpu"], "--device"),
    ("fit", ["--backbone", "timm:nonet"], "--backbone"),
    ("fit", ["--time-budget", "0"], "--time-budget"),
    ("fit", ["--max-cost", "0"], "--max-cost"),
    ("fit", ["--lock-timeout", "-5"], "--lock-timeout"),
    ("fit", ["--jit", "yes"], "--jit"),
    # fit --finetune: the recipe's own checks (Recipe.__post_init__), one option per field
    ("fit", ["--finetune", "--epochs", "0"], "--epochs"),
    ("fit", ["--finetune", "--ft-batch-size", "0"], "--ft-batch-size"),
    ("fit", ["--finetune", "--lr", "-1"], "--lr"),
    ("fit", ["--finetune", "--layer-decay", "0"], "--layer-decay"),
    ("fit", ["--finetune", "--freeze", "-1"], "--freeze"),
    ("fit", ["--finetune", "--warmup-epochs", "-1"], "--warmup-epochs"),
    ("fit", ["--finetune", "--weight-decay", "-0.1"], "--weight-decay"),
    ("fit", ["--finetune", "--label-smoothing", "1"], "--label-smoothing"),
    ("fit", ["--finetune", "--val-fraction", "1.5"], "--val-fraction"),
    ("fit", ["--finetune", "--patience", "many"], "--patience"),
    ("fit", ["--finetune", "--bn", "sometimes"], "--bn"),
    # experiment: protocol, grids of shots and targets, baselines
    ("experiment", ["--test-size", "1.0"], "--test-size"),
    ("experiment", ["--test-size", "0"], "--test-size"),
    ("experiment", ["--test-size", "-0.5"], "--test-size"),
    ("experiment", ["--test-size", "half"], "--test-size"),
    ("experiment", ["--baselines", "pixel"], "--baselines"),
    ("experiment", ["--shots", "0,1"], "--shots"),
    ("experiment", ["--shots", "1,two"], "--shots"),
    ("experiment", ["--shots", ","], "--shots"),
    ("experiment", ["--repeats", "0"], "--repeats"),
    ("experiment", ["--targets", "0.8,1.5"], "--targets"),
    ("experiment", ["--targets", "high"], "--targets"),
    ("experiment", ["--threshold", "0"], "--threshold"),
    ("experiment", ["--threshold", "1.2"], "--threshold"),
    ("experiment", ["--max-per-class", "0"], "--max-per-class"),
    ("experiment", ["--backbones", "efficientnet_lite0,nonet[random]"], "--backbones"),
    ("experiment", ["--backbones", ","], "--backbones"),
    ("experiment", ["--search", "medium"], "--search"),
    ("experiment", ["--batch-size", "0"], "--batch-size"),
    ("experiment", ["--test-size", "2", "--test-src", "elsewhere"], "--test-src"),
    ("experiment", ["--strategies", "finetune"], "--strategies"),
    ("experiment", ["--strategies", "frozen,lora"], "--strategies"),
    ("experiment", ["--finetune-epochs", "0"], "--finetune-epochs"),
    ("experiment", ["--pixel-size", "0"], "--pixel-size"),
    ("experiment", ["--select", "best"], "--select"),
    # predict and evaluate: the runtime options a saved model's settings can be overridden by
    ("predict", ["--batch-size", "0"], "--batch-size"),
    ("predict", ["--device", "xpu"], "--device"),
    ("predict", ["--precision", "fp8"], "--precision"),
    ("predict", ["--workers", "-1"], "--workers"),
    ("predict", ["--lock-timeout", "soon"], "--lock-timeout"),
    ("evaluate", ["--batch-size", "0"], "--batch-size"),
    ("evaluate", ["--device", "gpu"], "--device"),
    ("evaluate", ["--jit", "maybe"], "--jit"),
    # export
    ("export", ["--format", "tflite"], "--format"),
    ("export", ["--opset", "0"], "--opset"),
    # serve: the port and the limits (ServeLimits' own checks)
    ("serve", ["--port", "70000"], "--port"),
    ("serve", ["--port", "-1"], "--port"),
    ("serve", ["--max-files", "0"], "--max-files"),
    ("serve", ["--max-pixels", "0"], "--max-pixels"),
    ("serve", ["--max-batch", "0"], "--max-batch"),
    ("serve", ["--max-queue", "0"], "--max-queue"),
    ("serve", ["--max-upload-mb", "-1"], "--max-upload-mb"),
    ("serve", ["--batch-wait-ms", "-1"], "--batch-wait-ms"),
    ("serve", ["--runtime", "tensorrt"], "--runtime"),
    ("serve", ["--device", "xpu"], "--device"),
    # bench
    ("bench", ["--parts", "speed,nope"], "--parts"),
    ("bench", ["--images", "0"], "--images"),
    ("bench", ["--memory", "100"], "--memory"),
    ("bench", ["--search-sizes", "10,-1"], "--search-sizes"),
    # suggest: how many to pick, and the runtime options
    ("suggest", ["--n", "0"], "--n"),
    ("suggest", ["--batch-size", "0"], "--batch-size"),
    ("suggest", ["--device", "xpu"], "--device"),
    # the rest
    ("cache", ["fix", "x.h5"], "action"),
    ("cache", ["repair", "x.h5"], "--out"),
    ("backbones", ["--layers"], "--layers"),
    ("demo", ["--device", "xpu"], "--device"),
    ("demo", ["--seed", "zero"], "--seed"),
]


def _argv(cmd: str, extra: list[str], src: Path, tmp: Path) -> list[str]:
    if cmd == "featurize":
        base = ["featurize", str(src), "--cache", str(tmp / "c.h5")]
    elif cmd == "fit":
        base = ["fit", str(src), "--out", str(tmp / "m.joblib"), "--cache", str(tmp / "c.h5")]
    elif cmd == "experiment":
        base = ["experiment", str(src), "--out", str(tmp / "report"), "--cache", str(tmp / "c.h5")]
    elif cmd == "bench":
        base = ["bench", "--workdir", str(tmp / "bench")]
    elif cmd in ("predict", "evaluate"):  # the model is never loaded: the options stop first
        base = [cmd, str(tmp / "m.joblib"), str(src)]
        base += ["--out", str(tmp / "p.csv")] if cmd == "predict" else []
    elif cmd == "export":
        base = ["export", str(tmp / "m.joblib"), "--out", str(tmp / "m.onnx")]
    elif cmd == "serve":
        base = ["serve", str(tmp / "m.joblib")]
    elif cmd == "suggest":
        base = ["suggest", str(src), "--out", str(tmp / "picks.csv"), "--cache", str(tmp / "c.h5")]
    else:
        base = [cmd]
    return base + extra


@pytest.mark.parametrize(
    ("cmd", "extra", "names"), BAD, ids=[f"{c}:{' '.join(a)}" for c, a, _ in BAD]
)
def test_bad_argument_is_one_line_exit_2_and_nothing_is_done(
    cmd, extra, names, classes, tmp_path, capsys, no_forward_pass
):
    code = main(_argv(cmd, extra, classes, tmp_path))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USAGE, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"deepfeat {cmd}: error: ") and names in lines[0], lines[0]
    assert "Traceback" not in err and not out
    assert list(tmp_path.iterdir()) == [], "a bad argument left files behind"


@pytest.mark.parametrize(
    "extra", [["--heads", "logreg,svm"], ["--preprocessing", "pca+l3"], ["--scoring", "f1macro"]]
)
def test_bad_search_settings_stop_fit_before_any_image_is_embedded(
    extra, classes, tmp_path, capsys, no_forward_pass
):
    cache = tmp_path / "features.h5"
    argv = ["fit", str(classes), "--out", str(tmp_path / "m.joblib"), "--cache", str(cache)]
    assert main([*argv, *extra]) == EXIT_USAGE
    assert not cache.exists()
    assert "Traceback" not in capsys.readouterr().err


def test_the_same_fit_with_good_settings_does_embed(classes, tmp_path, capsys):
    """Negative control for the test above: the command itself reaches the CNN."""
    cache = tmp_path / "features.h5"
    argv = ["fit", str(classes), "--out", str(tmp_path / "m.joblib"), "--cache", str(cache)]
    # one space (--select none): the control is that fit reaches the CNN, not the default
    # choice among five spaces (7 min on a busy 2-core machine; test_cli_classify runs that)
    code = main([*argv, "--heads", "logreg", "--preprocessing", "l2", "--cv", "2", "--select", "none", "-q"])
    assert code == 0, capsys.readouterr().err
    assert cache.is_file() and (tmp_path / "m.joblib").is_file()


def test_library_parameter_errors_exit_2_with_json(classes, tmp_path, capsys, no_forward_pass):
    """A value only the library can judge (fp16 on a CPU) is a usage error too."""
    argv = ["featurize", str(classes), "--cache", str(tmp_path / "c.h5"), "--json"]
    code = main([*argv, "--device", "cpu", "--precision", "fp16"])
    out, err = capsys.readouterr()
    res = json.loads(out)
    assert code == EXIT_USAGE and res["error_type"] == "InvalidParameterError"
    assert "precision" in res["error"] and len(err.strip().splitlines()) == 1


def test_parse_errors_give_json_too(tmp_path, capsys):
    code = main(["featurize", str(tmp_path), "--cache", "c.h5", "--batch-size", "0", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == EXIT_USAGE and "--batch-size" in res["error"]


def test_data_errors_keep_exit_code_1(tmp_path, capsys):
    """Exit 2 is for arguments only: a missing folder is a failure of the work (1)."""
    code = main(["featurize", str(tmp_path / "missing"), "--cache", str(tmp_path / "c.h5")])
    assert code == 1 and "no such file or folder" in capsys.readouterr().err


# ------------------------------------------------------------ help and accepted values agree
def _experiment_action(dest: str):
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["experiment"]
    return sub, next(a for a in sub._actions if a.dest == dest)


@pytest.mark.parametrize("word", [*BASELINES, *BASELINE_WORDS, "pixels,random", "random,pixels"])
def test_every_baselines_value_the_help_offers_is_accepted(word):
    sub, action = _experiment_action("baselines")
    for part in word.split(","):
        assert part in action.help
    parsed = sub.parse_args(["src", "--baselines", word]).baselines
    # The library takes what the parser produced (today's 'both' reached it and failed).
    spaces = plan_spaces(["efficientnet_lite0"], [], parsed)
    assert {s.name for s in spaces if s.is_baseline} or word == "none"


def test_baselines_both_means_pixels_and_random_and_none_means_none():
    sub, _ = _experiment_action("baselines")
    assert sub.parse_args(["src", "--baselines", "both"]).baselines == ["pixels", "random"]
    assert sub.parse_args(["src", "--baselines", "none"]).baselines == []
    assert sub.parse_args(["src"]).baselines == ["pixels", "random"]  # the default, as --help says


def test_the_bad_argument_table_covers_every_subcommand():
    from deepfeat.cli.main import COMMANDS

    assert {cmd for cmd, _, _ in BAD} == set(COMMANDS)


# ------------------------------------------------------- each library parameter, one option
def _sub(name: str):
    parser, _ = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


def _flags(sub) -> list[str]:
    return [s for a in sub._actions for s in a.option_strings]


def _changed(value):
    """A valid value other than ``value`` (the recipe's and the featurizer's defaults)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    return value


def test_every_recipe_field_is_one_fit_option_and_reaches_the_estimator(tmp_path):
    """A Recipe field with no option, or with two, fails here; so does one that is parsed and
    then dropped on its way to FineTuneClassifier."""
    from dataclasses import fields

    from deepfeat.cli.finetune_options import finetune_kwargs, option_name
    from deepfeat.finetune import FineTuneClassifier
    from deepfeat.finetune.recipe import BN_MODES, Recipe

    sub = _sub("fit")
    flags = _flags(sub)
    params = set(FineTuneClassifier().get_params())
    for f in fields(Recipe):
        flag = option_name(f.name, f.default) or "--seed"  # the seed is fit's own --seed
        assert flags.count(flag) == 1, (f.name, flag)
        assert f.name in params
        new = "eval" if f.name == "bn" else _changed(f.default)
        assert new != f.default and (f.name != "bn" or new in BN_MODES)
        argv = ["src", "--out", str(tmp_path / "m.joblib"), "--finetune"]
        argv += [flag] if isinstance(f.default, bool) else [flag, str(new)]
        got = finetune_kwargs(sub.parse_args(argv))[f.name]
        assert got == new, (f.name, got, new)
        Recipe(**{f.name: got})  # and the recipe takes it


@pytest.mark.parametrize("cmd", ["featurize", "fit", "experiment", "predict", "evaluate"])
def test_every_runtime_option_is_declared_once_and_reaches_the_library(cmd, tmp_path):
    """--cache --device --precision --jit --batch-size --workers --storage-dtype --lock-timeout:
    one declaration (options.add_runtime_options) in every subcommand that embeds images, each
    passed on under the Featurizer's own parameter name."""
    import inspect

    from deepfeat.classify import ImageEmbedder
    from deepfeat.cli.options import RUNTIME_OPTIONS, featurizer_kwargs

    sub = _sub(cmd)
    flags = _flags(sub)
    featurizer = set(inspect.signature(Featurizer).parameters)
    estimator = set(ImageEmbedder().get_params())
    pos = {"featurize": ["src"], "fit": ["src", "--out", "m"], "experiment": ["src"],
           "predict": ["m", "src", "--out", "p"], "evaluate": ["m", "src"]}[cmd]
    values = {"cache": "c.h5", "device": "cpu", "precision": "fp32", "jit": "off",
              "batch_size": "7", "workers": "0", "storage_dtype": "float16", "lock_timeout": "3"}
    expect = {"cache": "c.h5", "device": "cpu", "precision": "fp32", "jit": False,
              "batch_size": 7, "num_workers": 0, "storage_dtype": "float16", "lock_timeout": 3.0}
    argv = list(pos)
    for name in RUNTIME_OPTIONS:
        flag = "--" + name.replace("_", "-")
        assert flags.count(flag) == 1, flag
        argv += [flag, values[name]]
    kw = featurizer_kwargs(sub.parse_args(argv))
    del kw["progress"]
    assert {k: kw[k] for k in expect} == expect
    assert set(kw) <= featurizer and set(expect) <= estimator
