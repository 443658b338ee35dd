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
from deepfeat.pipelines.spaces import BASELINES, plan_spaces


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
    # bench
    ("bench", ["--parts", "speed,nope"], "--parts"),
    ("bench", ["--images", "0"], "--images"),
    ("bench", ["--memory", "100"], "--memory"),
    ("bench", ["--search-sizes", "10,-1"], "--search-sizes"),
    # the rest
    ("cache", ["fix", "x.h5"], "action"),
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
    code = main([*argv, "--heads", "logreg", "--preprocessing", "l2", "--cv", "2", "-q"])
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
    assert sub.parse_args(["src", "--baselines", "both"]).baselines == list(BASELINES)
    assert sub.parse_args(["src", "--baselines", "none"]).baselines == []
    assert sub.parse_args(["src"]).baselines == list(BASELINES)  # the default, as --help says
