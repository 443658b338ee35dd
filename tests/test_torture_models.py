"""Torture suite, untrusted model files (:mod:`deepfeat.classify.persistence`).

A pickle-based model (``.joblib``/``.pkl``) that this machine did not save is never
unpickled unless the caller says so explicitly (``trusted=True`` / ``--trust``): a file
whose unpickling would run code is refused *before* any byte of it is unpickled. A
``.skops`` file is loaded as data; any type outside the allow-list -- a function like
``os.system``, ``eval``, an unknown class -- is refused by name. Broken files fail with a
one-line error, never a traceback.
"""

from __future__ import annotations

import json
import os
import pickle

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from deepfeat.classify.persistence import FORMAT, FORMAT_VERSION, load, save
from deepfeat.cli.main import main
from deepfeat.exceptions import InputError


class _Exploit:
    """Unpickling this creates the file at ``where`` (stands in for any code at all)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __reduce__(self):
        return (open, (self.where, "w"))


@pytest.fixture(autouse=True)
def _private_trust_store(tmp_path, monkeypatch):
    store = tmp_path / "trusted-models.txt"
    monkeypatch.setenv("DEEPFEAT_TRUST_STORE", str(store))
    return store


def _envelope(model) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "featurizer_specs": [],
        "versions": {},
        "created": "2026-01-01T00:00:00+00:00",
    }


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "pwned.txt"
    yield path
    assert (
        not path.exists() or path.stat().st_size == 0
    )  # (only the explicit-trust test creates it)


@pytest.mark.parametrize("suffix", [".joblib", ".pkl", ".pickle"])
@pytest.mark.parametrize("writer", ["joblib", "pickle"])
def test_a_code_running_pickle_is_refused_before_unpickling(suffix, writer, tmp_path, sentinel):
    evil = tmp_path / f"model{suffix}"
    payload = _envelope(_Exploit(str(sentinel)))
    if writer == "joblib":
        joblib.dump(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    with pytest.raises(
        InputError, match="refusing to load this pickle.*arbitrary code.*trusted=True.*skops"
    ):
        load(evil)
    with pytest.raises(InputError):
        load(evil, trusted=["something"])  # a list is not a yes for pickles
    assert not sentinel.exists(), "the pickle was unpickled without an explicit trust"


def test_trust_is_an_explicit_choice_and_really_unpickles(tmp_path, sentinel):
    evil = tmp_path / "model.joblib"
    joblib.dump(_envelope(_Exploit(str(sentinel))), evil)
    with pytest.raises(InputError):
        load(evil)
    assert not sentinel.exists()
    loaded = load(evil, trusted=True, check_backbone=False)  # the caller chose to run its code...
    loaded.close()  # (what the payload built: an open file)
    assert sentinel.exists(), "...so it ran: trusted=True is the only door"
    sentinel.write_text("")


def test_a_pickle_saved_here_and_then_changed_is_refused(tmp_path, sentinel):
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    path = save(model, tmp_path / "ours.joblib")
    assert load(path).predict([[1.0]]).tolist() == [1]  # saved by this machine: trusted
    joblib.dump(_envelope(_Exploit(str(sentinel))), path)  # replaced in place, same name
    with pytest.raises(InputError, match="refusing to load"):
        load(path)
    assert not sentinel.exists()


def test_cli_refuses_an_untrusted_pickle_in_one_line(tmp_path, capsys, sentinel):
    evil = tmp_path / "model.joblib"
    joblib.dump(_envelope(_Exploit(str(sentinel))), evil)
    (tmp_path / "imgs").mkdir()
    for cmd in (
        ["predict", str(evil), str(tmp_path / "imgs"), "--out", str(tmp_path / "p.csv")],
        ["evaluate", str(evil), str(tmp_path / "imgs")],
    ):
        code = main([*cmd, "--json"])
        captured = capsys.readouterr()
        assert code == 1, cmd
        err = json.loads(captured.out)
        assert err["error_type"] == "InputError" and "--trust" in err["error"]
        assert "Traceback" not in captured.err
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "payload, refused",
    [
        (os.system, "posix.system"),
        (eval, "builtins.eval"),
        (__import__("operator").methodcaller("system", "touch pwned"), "operator.methodcaller"),
        (_Exploit("pwned.txt"), "test_torture_models._Exploit"),
    ],
    ids=["os.system", "eval", "methodcaller", "custom-class"],
)
def test_skops_refuses_types_outside_the_allow_list(payload, refused, tmp_path, sentinel):
    path = tmp_path / "model.skops"
    sio.dump(_envelope({"head": LogisticRegression(), "extra": payload}), path)
    with pytest.raises(InputError, match=rf"not on the allow-list.*{refused}"):
        load(path)
    assert not (tmp_path / "pwned.txt").exists() and not os.path.exists("pwned.txt")


def test_skops_loads_plain_sklearn_without_asking(tmp_path):
    model = LogisticRegression().fit(np.r_[np.zeros((3, 2)), np.ones((3, 2))], [0, 0, 0, 1, 1, 1])
    path = tmp_path / "shared.skops"
    save(model, path)
    from deepfeat.classify.persistence import trust_store_path

    trust_store_path().unlink(missing_ok=True)  # a received file: nothing recorded about it
    assert load(path).predict([[1, 1]]).tolist() == [1]


@pytest.mark.parametrize("kind", ["pickle_renamed", "garbage", "truncated", "empty"])
def test_broken_skops_files_fail_cleanly(kind, tmp_path, sentinel, capsys):
    path = tmp_path / "model.skops"
    if kind == "pickle_renamed":
        path.write_bytes(pickle.dumps(_envelope(_Exploit(str(sentinel)))))
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        sio.dump(_envelope(LogisticRegression()), path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(b"")
    with pytest.raises(InputError, match="cannot (read|load) .skops file"):
        load(path)
    code = main(["predict", str(path), str(tmp_path), "--out", str(tmp_path / "p.csv"), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert not sentinel.exists()
