"""TransferClassifier composes an embedder and a search; every parameter is declared once.

Checked: no parameter of the parts is re-declared by the wrapper; nested parameters route
as in a Pipeline and ``fit`` leaves the parts as given; ``embedder=None`` picks the
embedder of the inputs' modality; the embedders' defaults are the featurizers'; parameter
errors are deepfeat's ``InvalidParameterError`` naming the parameter; a model pickled in
the earlier flat layout loads and predicts the same; every parameter of the composed
model has exactly one ``deepfeat fit`` option (or a stated reason for none), and each
option reaches its parameter.
"""

from __future__ import annotations

import inspect
import pickle

import joblib
import numpy as np
import pytest
from serve_models import TINY, tone_images
from sklearn.base import clone

from deepfeat.classify import EmbeddingClassifier, ImageEmbedder, TextEmbedder, TransferClassifier
from deepfeat.classify.modality import input_modality
from deepfeat.classify.params import IMAGE_DEFAULTS, TEXT_DEFAULTS
from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize import Featurizer
from deepfeat.featurize.text_featurizer import TextFeaturizer


def _defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


# ---------------------------------------------------------------- declared once
def test_the_wrapper_redeclares_no_parameter_of_its_parts():
    own = set(TransferClassifier().get_params(deep=False))
    for part in (ImageEmbedder, TextEmbedder, EmbeddingClassifier):
        assert not own & set(_defaults(part)) - {"verbose"}, part
    # verbose is the wrapper's own switch for its parts' progress, not a copy of a default
    assert own == {"embedder", "search", "spaces", "time_budget", "max_cost", "max_ms_per_image",
                   "max_cv_spaces", "verbose"}


@pytest.mark.parametrize("embedder, featurizer", [(ImageEmbedder, Featurizer), (TextEmbedder, TextFeaturizer)])
def test_embedder_defaults_are_the_featurizers(embedder, featurizer):
    ours, theirs = _defaults(embedder), _defaults(featurizer)
    shared = set(ours) & set(theirs)
    assert shared >= {"backbone", "cache", "device", "precision", "batch_size", "lock_timeout", "progress"}
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    assert set(ours) - set(theirs) == {"on_error"}  # the embedders' own
    # the table the embedders read from is the featurizers' signature, not a copy
    assert (IMAGE_DEFAULTS if embedder is ImageEmbedder else TEXT_DEFAULTS) == theirs


def test_the_two_featurizers_agree_on_shared_runtime_defaults():
    """The CLI declares one runtime option for both modalities: their defaults must agree."""
    shared = {"cache", "device", "precision", "batch_size", "storage_dtype", "lock_timeout", "progress"}
    assert {k: IMAGE_DEFAULTS[k] for k in shared} == {k: TEXT_DEFAULTS[k] for k in shared}


# ---------------------------------------------------------------- composition
def test_nested_parameters_route_and_clone_copies_the_parts():
    emb, search = ImageEmbedder(device="cpu"), EmbeddingClassifier("logreg")
    clf = TransferClassifier(emb, search)
    deep = clf.get_params(deep=True)
    assert deep["embedder__device"] == "cpu" and deep["search__heads"] == "logreg"
    clf.set_params(embedder__cache="x.h5", search__cv=3)
    assert (emb.cache, search.cv) == ("x.h5", 3)  # routed into the parts, as a Pipeline does
    twin = clone(clf)
    assert twin.embedder is not emb and twin.get_params(deep=True).keys() == deep.keys()
    with pytest.raises(ValueError, match="Invalid parameter 'device'"):
        clf.set_params(device="cpu")  # no flat copy to set


def test_fit_leaves_the_given_parts_unfitted_and_unchanged(tmp_path):
    X, y = tone_images(4)
    emb = ImageEmbedder(**TINY, cache=str(tmp_path / "c.h5"))
    search = EmbeddingClassifier("logreg", cv=2)
    before = joblib.hash((emb, search))
    clf = TransferClassifier(emb, search, spaces=None, verbose=1).fit(X, y)
    assert joblib.hash((emb, search)) == before
    assert not hasattr(emb, "featurizer_spec_") and not hasattr(search, "best_estimator_")
    assert clf.search_ is not search and clf.embedder_ is not emb
    # verbose reached the clones, not the parts given
    assert clf.embedder_.progress and clf.search_.verbose == 1 and not emb.progress


def test_embedder_none_follows_the_inputs_and_a_name_is_short_for_its_embedder(tmp_path):
    texts = ["a great phone", "it broke in a day"]
    paths = [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    assert input_modality(texts) == "text" and input_modality(paths) == "image"
    assert input_modality([np.zeros((8, 8, 3), np.uint8)]) == "image"
    (tmp_path / "notes").write_bytes(b"")  # an existing file, whatever its name, is read as an image
    assert input_modality([str(tmp_path / "notes")]) == "image"
    clf = TransferClassifier(spaces=None)
    assert clf.candidate_spaces(texts)[0][0]["backbone"] == TextEmbedder().backbone
    assert clf.candidate_spaces(paths)[0][0]["backbone"] == ImageEmbedder().backbone
    assert isinstance(TransferClassifier("minilm").resolve_embedder(), TextEmbedder)
    assert isinstance(TransferClassifier("tfidf").resolve_embedder("image"), TextEmbedder)  # the name decides
    # the automatic candidates derive from the embedder given: its backbone, its layer
    spaces = TransferClassifier(ImageEmbedder(TINY["backbone"], weights=None)).candidate_spaces()
    assert {p["backbone"] for s in spaces for p in s} == {TINY["backbone"]}
    assert all(p["weights"] is None for s in spaces for p in s)


def test_texts_fit_with_every_default_but_the_search(tmp_path):
    """``TransferClassifier().fit(texts, y)``: the text embedder, chosen from the data."""
    texts = ["great phone", "love this screen", "works very well", "excellent value",
             "broke at once", "awful battery", "terrible support", "waste of money"]
    y = [1] * 4 + [0] * 4
    clf = TransferClassifier(search=EmbeddingClassifier("logreg", cv=2), spaces=None).fit(texts, y)
    assert clf.featurizer_spec_["backbone"] == TextEmbedder().backbone and clf.embedder is None
    assert clf.predict_table(["superb"]).columns[0] == "text"


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("est, name", [
    (TransferClassifier(max_cv_spaces=0), "max_cv_spaces"),
    (TransferClassifier(time_budget=-1), "time_budget"),
    (TransferClassifier(spaces="all"), "spaces"),
    (TransferClassifier(embedder=3), "embedder"),
    (TransferClassifier(search="logreg"), "search"),
    (TransferClassifier(ImageEmbedder(batch_size=0)), "batch_size"),
    (TransferClassifier(ImageEmbedder(on_error="skip")), "on_error"),
    (ImageEmbedder(num_workers=-1), "num_workers"),
    (ImageEmbedder(jit="yes"), "jit"),
    (TextEmbedder(pool="max"), "pool"),
    (TextEmbedder(max_length=0), "max_length"),
])
def test_a_bad_parameter_is_one_line_naming_it(est, name):
    X = ["a.png", "b.png"] if not isinstance(est, TextEmbedder) else ["a", "b"]
    with pytest.raises(InvalidParameterError) as err:
        est.fit(X, [0, 1])
    msg = str(err.value)
    assert f"'{name}' parameter" in msg and "\n" not in msg


# ---------------------------------------------------------------- saved models
def test_a_model_pickled_in_the_flat_layout_loads_and_predicts_the_same(tmp_path):
    """Before composition every parameter was an attribute of the model: such a pickle
    gets an embedder and a search holding them, and predicts as before."""
    X, y = tone_images(4)
    emb = ImageEmbedder(**TINY, cache=str(tmp_path / "c.h5"))
    clf = TransferClassifier(emb, EmbeddingClassifier("logreg", cv=2), spaces=None).fit(X, y)
    flat = {k: v for k, v in vars(clf).items() if k not in ("embedder", "search")}
    flat.update({k: v for k, v in emb.get_params().items() if k not in ("on_error", "progress")})
    flat.update({k: v for k, v in clf.search.get_params().items() if k not in ("max_iter", "tol", "verbose")})
    del flat["max_cost"]  # and older still: a parameter added since
    old = TransferClassifier.__new__(TransferClassifier)
    old.__dict__.update(flat)  # as unpickled by the earlier version, before __setstate__
    back = pickle.loads(pickle.dumps(old))
    assert isinstance(back.embedder, ImageEmbedder) and back.embedder.get_params() == emb.get_params()
    assert back.search.get_params() == clf.search.get_params() and back.max_cost is None
    assert not {"device", "heads", "cache"} & set(vars(back))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.set_params(embedder__batch_size=2).predict(X).tolist() == clf.predict(X).tolist()


# ---------------------------------------------------------------- the fit options
def _parse(argv):
    from deepfeat.cli.main import build_parser

    return build_parser("fit")[0].parse_args(["fit", "src", "--out", "m.joblib", *argv])


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "minilm"])
def test_every_parameter_has_one_fit_option_or_a_reason(backbone):
    """A library parameter with no option, or with two, fails here."""
    from deepfeat.cli.cmd_fit import NOT_OPTIONS, build_model, option_params

    args = _parse(["--backbone", backbone])
    model = build_model(args, "auto", args.heads)
    deep = {k for k, v in model.get_params(deep=True).items() if k not in ("embedder", "search")}
    by_option = option_params(args)
    options = set(by_option) | {"spaces", "verbose"}  # --select/--backbones/--layers, --quiet
    missing = deep - options - set(NOT_OPTIONS)
    assert not missing, f"parameters without a fit option: {sorted(missing)}"
    assert not set(NOT_OPTIONS) & set(by_option)  # an exemption that got an option
    assert set(NOT_OPTIONS) <= deep | {"embedder__max_length"}
    # one option each: option_params maps every option to a distinct parameter
    from deepfeat.cli.cmd_fit import OWN_OPTIONS, SEARCH_OPTIONS
    from deepfeat.cli.options import featurizer_kwargs

    names = [*featurizer_kwargs(args), "max_length", *SEARCH_OPTIONS.values(), *OWN_OPTIONS.values()]
    names.remove("progress")
    assert len(names) == len(set(names))


#: A non-default value per fit option, and the parameter it must reach.
CHANGED = [
    (["--device", "cpu"], "embedder__device", "cpu"),
    (["--precision", "fp32"], "embedder__precision", "fp32"),
    (["--jit", "off"], "embedder__jit", False),
    (["--batch-size", "7"], "embedder__batch_size", 7),
    (["--workers", "0"], "embedder__num_workers", 0),
    (["--storage-dtype", "float16"], "embedder__storage_dtype", "float16"),
    (["--lock-timeout", "3"], "embedder__lock_timeout", 3.0),
    (["--layer", "blocks.5"], "embedder__layer", "blocks.5"),
    (["--weights", "none"], "embedder__weights", None),
    (["--checkpoint", "ft.pt"], "embedder__checkpoint", "ft.pt"),
    (["--tta", "flip"], "embedder__tta", "flip"),
    (["--heads", "linsvm"], "search__heads", ("linsvm",)),
    (["--grid", "full"], "search__grid", "full"),
    (["--selection", "best"], "search__selection", "best"),
    (["--preprocessing", "l2"], "search__preprocessing", ("l2",)),
    (["--cv", "3"], "search__cv", 3),
    (["--scoring", "f1_macro"], "search__scoring", "f1_macro"),
    (["--class-weight", "balanced"], "search__class_weight", "balanced"),
    (["--no-calibrate"], "search__calibrate", False),
    (["--no-honest"], "search__honest", False),
    (["--max-iter", "50"], "search__max_iter", 50),
    (["--tol", "0.01"], "search__tol", 0.01),
    (["--n-jobs", "2"], "search__n_jobs", 2),
    (["--seed", "7"], "search__random_state", 7),
    (["--time-budget", "60"], "time_budget", 60.0),
    (["--max-cost", "2"], "max_cost", 2),
    (["--max-ms-per-image", "5"], "max_ms_per_image", 5.0),
    (["--max-cv-spaces", "2"], "max_cv_spaces", 2),
]


@pytest.mark.parametrize("argv, param, value", CHANGED, ids=[c[0][0] for c in CHANGED])
def test_each_fit_option_reaches_its_parameter(argv, param, value):
    from deepfeat.cli.cmd_fit import build_model

    args = _parse(["--backbone", "efficientnet_lite0", *argv])
    params = build_model(args, "auto", args.heads).get_params(deep=True)
    base = _parse(["--backbone", "efficientnet_lite0"])
    default = build_model(base, "auto", base.heads).get_params(deep=True)
    assert params[param] == value != default[param]  # negative control: the default differs


def test_max_length_reaches_a_text_embedder_and_an_option_of_the_other_modality_is_refused():
    from deepfeat.cli.cmd_fit import build_model

    args = _parse(["--backbone", "minilm", "--max-length", "64"])
    assert build_model(args, "auto", args.heads).get_params(deep=True)["embedder__max_length"] == 64
    for backbone, argv in (("minilm", ["--tta", "flip"]), ("minilm", ["--workers", "0"]),
                           ("efficientnet_lite0", ["--max-length", "64"])):
        args = _parse(["--backbone", backbone, *argv])
        with pytest.raises(InvalidParameterError, match=f"{argv[0]}: not an option of"):
            build_model(args, "auto", args.heads)
