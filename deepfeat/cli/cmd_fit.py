"""``deepfeat fit``: train an image classifier (cached embeddings + searched head) and save it."""

from __future__ import annotations

import argparse
import inspect
import os
import time
from typing import Any

from deepfeat.classify.candidates import (
    GRIDS,
    HEADS,
    PREPROCESSING_STEPS,
    check_heads,
    check_preprocessing,
)
from deepfeat.classify.cv import class_counts
from deepfeat.classify.modality import embedder_class
from deepfeat.classify.params import IMAGE_DEFAULTS, TEXT_DEFAULTS
from deepfeat.classify.persistence import save
from deepfeat.classify.search import EmbeddingClassifier
from deepfeat.classify.select_rule import SELECTIONS
from deepfeat.classify.spaces import default_space_specs
from deepfeat.classify.text_embedder import TextEmbedder
from deepfeat.classify.transfer import ENSEMBLE_MAX_IMAGES, TransferClassifier
from deepfeat.cli.finetune_options import add_finetune_arguments, finetune_kwargs
from deepfeat.cli.options import add_backbone_options, add_runtime_options, featurizer_kwargs
from deepfeat.cli.text_inputs import (
    add_text_options,
    pick_backbone,
    read_labeled_texts,
    source_rows,
)
from deepfeat.cli.validate import checked, integer, number, scorer
from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.featurize import DEFAULT_BACKBONE
from deepfeat.featurize.inputs import load_labeled

#: ``--deployable`` targets; ``onnx`` leaves out the heads the ONNX export refuses.
DEPLOYABLE = ("any", "onnx")
#: Heads the ONNX export cannot express (deepfeat.export.head says why).
NOT_ONNX_HEADS = ("rbfsvm",)

HELP = (
    "train a classifier on labelled images: embed what the cache lacks, choose space and head "
    "by CV, save"
)

_DEFAULTS = {k: p.default for k, p in inspect.signature(TransferClassifier).parameters.items()}
_SEARCH = {k: p.default for k, p in inspect.signature(EmbeddingClassifier).parameters.items()}
_TEXT = {k: p.default for k, p in inspect.signature(TextEmbedder).parameters.items()}

#: fit's options that set a parameter of the head search, by option name (``dest``).
SEARCH_OPTIONS = {
    "heads": "heads", "preprocessing": "preprocessing", "grid": "grid", "selection": "selection",
    "honest": "honest", "cv": "cv", "scoring": "scoring", "class_weight": "class_weight",
    "calibrate": "calibrate", "max_iter": "max_iter", "tol": "tol", "n_jobs": "n_jobs", "seed": "random_state",
}
#: fit's options that set a parameter of TransferClassifier itself (``--select``,
#: ``--backbones`` and ``--layers`` make ``spaces``; ``--quiet`` sets ``verbose``).
OWN_OPTIONS = {
    "time_budget": "time_budget", "max_cost": "max_cost", "max_ms_per_image": "max_ms_per_image",
    "max_cv_spaces": "max_cv_spaces",
}
#: Library parameters fit sets without an option of their own, and why.
NOT_OPTIONS = {
    "embedder__on_error": "fit leaves unreadable inputs out and reports them, whatever it is",
    "embedder__progress": "--quiet",
    "search__verbose": "--quiet",
    "search__param_grid": "a grid per head has no command-line form; --grid picks one",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="folder of class subfolders (images or .txt files), or a CSV/parquet "
                   "manifest (path,label for images; text,label for texts)")
    p.add_argument(
        "--out", required=True, help="model file to write: .joblib, or .skops to share safely"
    )
    p.add_argument("--path-col", default="path", help="path column of a manifest")
    p.add_argument("--label-col", "--label-column", dest="label_col", default="label",
                   help="label column of a manifest")
    add_text_options(p)
    add_backbone_options(p, tta=True, texts=True)
    p.add_argument_group("backbone").add_argument(
        "--max-length", type=integer(1), default=_TEXT["max_length"], metavar="TOKENS",
        help="texts: the encoder's window in tokens (default: the encoder's own); longer texts are truncated")
    add_runtime_options(p, cache_help="HDF5 embedding cache (default: a temporary one)")
    c = p.add_argument_group("candidate spaces")
    c.add_argument(
        "--select",
        default="none" if _DEFAULTS["spaces"] is None else "auto",
        choices=("auto", "none"),
        help="auto: choose among candidate spaces (the backbone's penultimate embedding, a late "
        "cut point, their concatenation, flip-averaged where available, and an ensemble of the "
        f"offline zoo up to {ENSEMBLE_MAX_IMAGES:,} images); none: only "
        "--backbone/--layer",
    )
    c.add_argument(
        "--backbones",
        default=None,
        help="comma-separated backbones to choose among (default: --backbone)",
    )
    c.add_argument(
        "--layers",
        default=None,
        help="comma-separated cut points to choose among, 'penultimate' for the pooled "
        "embedding (default: --layer, else the penultimate and a late cut point)",
    )
    c.add_argument(
        "--time-budget",
        type=number(0, closed="high"),
        default=None,
        metavar="SECONDS",
        help="bound on the whole fit, featurizing included: spaces that do not fit are skipped",
    )
    c.add_argument(
        "--max-cost",
        type=integer(1),
        default=_DEFAULTS["max_cost"],
        metavar="PASSES",
        help="most forward passes per image a candidate space may take at inference (a part "
        "counts one, a flip-averaged part two)",
    )
    c.add_argument(
        "--max-ms-per-image",
        type=number(0, closed="high"),
        default=_DEFAULTS["max_ms_per_image"],
        metavar="MS",
        help="most milliseconds per image a candidate space's networks may take on this machine "
        "(each network timed on a few batches first)",
    )
    c.add_argument(
        "--max-cv-spaces",
        type=integer(1),
        default=_DEFAULTS["max_cv_spaces"],
        metavar="N",
        help="candidate spaces cross-validated; more are first pruned by their LogME score "
        "(default: %(default)s)",
    )
    c.add_argument(
        "--deployable",
        default="any",
        choices=DEPLOYABLE,
        help="onnx: only heads `deepfeat export --format onnx` can write (every space exports; "
        "rbfsvm, a kernel SVM, does not, and is left out with a note)",
    )
    s = p.add_argument_group("search")
    s.add_argument(
        "--heads",
        type=checked(check_heads),
        default=_SEARCH["heads"] if isinstance(_SEARCH["heads"], str) else ",".join(_SEARCH["heads"]),
        help=f"comma-separated, among {','.join(HEADS)}; auto: logreg, plus linsvm on small data with few classes",
    )
    s.add_argument(
        "--grid", default=_SEARCH["grid"], choices=tuple(GRIDS), help="default values searched"
    )
    s.add_argument(
        "--selection",
        default=_SEARCH["selection"],
        choices=SELECTIONS,
        help="one_se: the most regularised candidate within one standard error of the best",
    )
    s.add_argument(
        "--preprocessing",
        type=checked(check_preprocessing),
        default=_SEARCH["preprocessing"]
        if isinstance(_SEARCH["preprocessing"], str)
        else ",".join(_SEARCH["preprocessing"]),
        help=f"comma-separated choices; steps {','.join(PREPROCESSING_STEPS)}, chained with '+'",
    )
    s.add_argument(
        "--cv",
        type=integer(2),
        default=_SEARCH["cv"],
        help="folds wanted (default 5, 3 from 2,000 images on; fewer when a class is small; "
        "repeated when tiny)",
    )
    s.add_argument(
        "--scoring", default=_SEARCH["scoring"], type=scorer, help="e.g. accuracy, balanced_accuracy, f1_macro"
    )
    s.add_argument(
        "--class-weight", default=_SEARCH["class_weight"], choices=("balanced",), help="reweight classes by 1/size"
    )
    s.add_argument(
        "--no-calibrate", dest="calibrate", action="store_false", default=_SEARCH["calibrate"],
        help="keep the chosen head's own probabilities (SVM heads then have none) instead of a temperature "
        "fitted out of fold",
    )
    s.add_argument(
        "--no-honest", dest="honest", action="store_false", default=_SEARCH["honest"],
        help="skip the honest (bootstrap bias-corrected) estimate; it costs no fits",
    )
    s.add_argument(
        "--max-iter", type=integer(1), default=_SEARCH["max_iter"],
        help="iteration limit of each logistic-regression fit in the search (default: %(default)s)",
    )
    s.add_argument(
        "--tol", type=number(0, closed="high"), default=_SEARCH["tol"],
        help="tolerance of the logistic-regression fits (default: %(default)s)",
    )
    s.add_argument(
        "--n-jobs", type=integer(nonzero=True), default=_SEARCH["n_jobs"], help="CV folds scored in parallel"
    )
    s.add_argument("--seed", type=int, default=_SEARCH["random_state"])
    p.add_argument(
        "--unlabeled",
        default=None,
        metavar="POOL",
        help="unlabelled items (folder, listing or manifest) to learn from: label spreading on "
        "their embeddings enters only if the out-of-fold estimate says it helps",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit non-zero if any training image could not be read (the model is still saved)",
    )
    add_finetune_arguments(p)


def _list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def candidate_spaces(args: argparse.Namespace) -> list[Any] | None:
    """The ``spaces`` argument of TransferClassifier for ``--select/--backbones/--layers``:
    ``"auto"`` (the estimator's own default choice) unless several backbones or layers are
    named."""
    if args.select == "none":
        return None
    if args.backbones is None and args.layers is None and not getattr(args, "finetune", False):
        return "auto"
    # --backbone defaults to the source's kind; candidate spaces are for images
    backbones = _list(args.backbones) or [args.backbone or DEFAULT_BACKBONE]
    layers = _list(args.layers) or ([args.layer] if args.layer else None)
    # the ensemble space brings other backbones with their own pretrained weights: not
    # with random weights, a checkpoint, or a backbone about to be fine-tuned
    own_weights = args.weights == "DEFAULT" and not args.checkpoint and not getattr(args, "finetune", False)
    return default_space_specs(backbones, layers, ensemble=own_weights)


def _text_spaces(args: argparse.Namespace) -> Any:
    """``spaces`` for a text encoder: ``"auto"``, or the defaults with ``--layers``."""
    from deepfeat.classify.spaces import default_text_space_specs

    if args.backbones is not None:
        raise InvalidParameterError("--backbones is for images; for texts give one --backbone")
    layers = _list(args.layers)
    return "auto" if layers is None else default_text_space_specs(args.backbone, layers)


def best_summary(model: TransferClassifier) -> dict[str, Any]:
    """The chosen candidate, as the ``best:`` line, the starred line and ``--json`` show it.

    Its CV figures are those of its own row of ``selection_["candidates"]`` (the
    one-standard-error rule may choose another candidate than the top-scoring one).
    """
    p = model.best_params_
    best = {
        "space": model.space_,
        **{k: p[k] for k in ("preprocess", "head", "C", "gamma") if k in p},
        "cv_score": float(model.best_score_),
        "cv_std": float(model.best_std_),
        "honest_score": float(model.honest_score_),
        "selection": model.search_.selection,
    }
    cal = getattr(model.search_, "calibration_", None)
    if cal:
        best["calibration"] = dict(cal)
    return best


def deployable_heads(heads: Any, deployable: str) -> tuple[Any, list[str]]:
    """``--heads`` without those ``--deployable`` cannot export, and notes on what was left out."""
    if deployable != "onnx":
        return heads, []
    names = list(heads) if not isinstance(heads, str) else [h.strip() for h in heads.split(",")]
    dropped = [h for h in names if h in NOT_ONNX_HEADS]
    if not dropped:
        return heads, []
    kept = [h for h in names if h not in NOT_ONNX_HEADS]
    if not kept:
        raise InvalidParameterError(
            f"--deployable onnx: every head of --heads {','.join(names)} is one the ONNX export "
            f"refuses ({', '.join(NOT_ONNX_HEADS)}); add logreg or linsvm"
        )
    return ",".join(kept), [f"--deployable onnx: left out head {h} (the ONNX export refuses it)" for h in dropped]


def finetune_texts(model: TransferClassifier, X: list[str], labels: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``fit --finetune`` on texts: the contrastive fine-tune of the encoder
    (:class:`~deepfeat.text_finetune.ContrastiveTextClassifier`, resumable in the
    fine-tuning folder), then ``model``'s own head search on the tuned encoder, given to it
    as a checkpoint. Returns the training summary."""
    from deepfeat.featurize.text_encoders import DEFAULT_TEXT_BACKBONE

    emb = model.resolve_embedder("text")
    if emb.backbone != DEFAULT_TEXT_BACKBONE or emb.checkpoint is not None:
        raise InvalidParameterError(
            f"--finetune on texts tunes the offline encoder {DEFAULT_TEXT_BACKBONE!r} only; got --backbone "
            f"{emb.backbone}" + (f" --checkpoint {emb.checkpoint}" if emb.checkpoint else "")
        )
    from deepfeat.text_finetune import ContrastiveTextClassifier
    from deepfeat.text_finetune.checkpoint import save_encoder_checkpoint

    work = finetune_kwargs(args)["work_dir"]
    clf = ContrastiveTextClassifier(seed=args.seed, checkpoint_dir=work).fit(X, labels)
    ckpt = save_encoder_checkpoint(clf, os.path.join(work, "encoder.pt"))
    model.set_embedder_params(checkpoint=ckpt).fit(X, labels)
    return {"strategy": "contrastive (deepfeat.text_finetune)", **clf.train_summary_, "checkpoint": ckpt}


def option_params(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters of the composed :class:`TransferClassifier` that fit's options set,
    as ``get_params(deep=True)`` names them (``embedder__device``, ``search__cv``...)."""
    fkw = featurizer_kwargs(args)  # backbone and runtime options, as Featurizer names them
    del fkw["progress"]
    fkw["max_length"] = args.max_length
    out = {f"embedder__{k}": v for k, v in fkw.items()}
    out.update({f"search__{p}": getattr(args, dest) for dest, p in SEARCH_OPTIONS.items()})
    out.update({p: getattr(args, dest) for dest, p in OWN_OPTIONS.items()})
    return out


def build_model(args: argparse.Namespace, spaces: Any, heads: Any) -> TransferClassifier:
    """The TransferClassifier the options describe: an embedder for ``--backbone`` (images
    or texts) and a search, each with the options' values."""
    params = option_params(args)
    if params["embedder__cache"] is not None:
        params["embedder__cache"] = os.path.abspath(params["embedder__cache"])
    params["search__heads"] = heads
    emb = embedder_class(args.backbone)(args.backbone)
    known = emb.get_params(deep=False)
    other = {k[10:]: v for k, v in params.items() if k.startswith("embedder__") and k[10:] not in known}
    given = sorted(k for k, v in other.items() if v != {**IMAGE_DEFAULTS, **TEXT_DEFAULTS}.get(k))
    if given:
        flags = ", ".join("--workers" if k == "num_workers" else "--" + k.replace("_", "-") for k in given)
        raise InvalidParameterError(f"{flags}: not an option of {type(emb).__name__} (--backbone {args.backbone}); "
                                    f"leave it out")
    params = {k: v for k, v in params.items() if not k.startswith("embedder__") or k[10:] in known}
    model = TransferClassifier(emb, EmbeddingClassifier(), spaces=spaces, verbose=0 if args.quiet else 1)
    return model.set_params(**params)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    heads, notes = deployable_heads(args.heads, args.deployable)
    args.backbone, kind = pick_backbone(args.backbone, args.src, args.text_col, args.path_col)
    if kind == "text":
        tds = read_labeled_texts(args.src, args.text_col, args.label_col)
        X, labels = tds.texts, tds.labels
        skipped = [{"path": f["row"], "reason": f["reason"]} for f in tds.failed]
    else:
        ds = load_labeled(args.src, path_col=args.path_col, label_col=args.label_col)
        X, labels, skipped = ds.paths, ds.labels, ds.skipped
    spaces = candidate_spaces(args) if kind == "image" else (None if args.select == "none" else
                                                             _text_spaces(args))
    model = build_model(args, spaces, heads)
    t0 = time.perf_counter()
    tuned = tuned_text = None
    if args.finetune and kind == "text":
        tuned_text = finetune_texts(model, X, labels, args)
    elif args.finetune:
        from deepfeat.finetune import FineTuneClassifier

        tuned = FineTuneClassifier(model, **finetune_kwargs(args)).fit(X, labels)
        model = tuned.transfer_  # an ordinary model on the fine-tuned checkpoint
    else:
        model.fit(X, labels)
    semi = None
    if args.unlabeled is not None:
        from deepfeat.label.semi import learn_from_unlabeled

        if kind == "text":
            from deepfeat.featurize.text_sources import read_texts

            pool = read_texts(args.unlabeled, text_col=args.text_col, label_col=None, labeled=False).texts
        else:
            from deepfeat.featurize.inputs import scan_images

            pool = scan_images(args.unlabeled)[0]
        if not pool:
            raise InputError(f"--unlabeled {args.unlabeled}: no items found")
        semi = learn_from_unlabeled(model, X, labels, pool, random_state=args.seed)
    fit_seconds = time.perf_counter() - t0
    out = save(model, args.out)
    best = best_summary(model)
    cands = model.selection_["candidates"]
    per_space = {c["space"] for c in cands}
    result = {
        "model": out,
        "source": args.src,
        "modality": kind,
        "n_images": len(X),
        "classes": class_counts(labels),
        "best_pipeline": model.describe(),
        "best": best,
        "best_params": model.best_params_,
        "cv_score": model.best_score_,
        "cv_score_is": "optimistic: the mean CV score of the chosen candidate",
        "cv_std": model.best_std_,
        "honest_score": model.honest_score_,
        "honest_score_is": "bootstrap bias-corrected CV estimate of the whole selection",
        "space": model.space_,
        "recipe": model.space_spec_,
        "part_norm": model.part_norm_,
        "cost": model.cost_,  # forward passes and ms per image of the chosen space  # how the recipe's parts are scaled before they are joined
        "spaces_tried": model.selection_["spaces"],
        "candidates_tried": cands,
        "scoring": args.scoring,
        "n_splits": model.n_splits_,
        "n_candidates": len(cands),
        "n_spaces_cross_validated": len(per_space),
        "featurize": model.featurize_summary_,
        "featurize_is": "featurized, cached: embeddings over all space parts (n_parts x images); "
        "total, failed: images",
        "search_seconds": round(model.search_.search_time_, 3),
        "fit_seconds": round(fit_seconds, 3),
        "failures": (source_rows(tds, model.failures_) if kind == "text" else
                     [{"path": f["path"], "reason": f["reason"]} for f in model.failures_]),
        "skipped": skipped,
        "duplicates": tds.duplicates if kind == "text" else None,
        "notes": notes,
    }
    if semi is not None:
        result["unlabeled"] = semi
    if "no_estimate" in model.selection_:
        result["no_estimate"] = model.selection_["no_estimate"]
    if tuned_text is not None:
        result["finetune"] = tuned_text
    if tuned is not None:
        result["finetune"] = {**tuned.train_summary_, "checkpoint": tuned.checkpoint_, "history": tuned.history_}
    return result, 1 if args.strict and model.failures_ else 0


def _candidate(c: dict[str, Any]) -> str:
    """``preprocess -> head(C=...)``, as :meth:`TransferClassifier.describe` writes it."""
    extra = ", ".join(f"{k}={c[k]:.3g}" for k in ("C", "gamma") if c.get(k) is not None)
    return f"{c['preprocess']} -> {c['head']}({extra})"


def _featurize_line(r: dict[str, Any]) -> str:
    f = r["featurize"]
    what = "texts" if r.get("modality") == "text" else "images"
    n_parts = len(f.get("parts", {})) or 1
    embedded = (
        f"{n_parts} space parts x {f['total']} {what}: " if n_parts > 1 else ""
    ) + f"{f['featurized']} embeddings computed, {f['cached']} read from the cache"
    trunc = sum(p.get("truncated", 0) for p in f.get("parts", {}).values()) or f.get("truncated", 0)
    extra = f", {trunc} truncated to the encoder's window" if trunc else ""
    if r.get("duplicates"):
        extra += f", {r['duplicates']} repeated (each encoded once)"
    bad = "empty" if what == "texts" else "unreadable"
    return (
        f"{r['n_images']} {what} in {len(r['classes'])} classes ({f['failed']} {bad}{extra}); "
        f"{embedded}; fit {r['fit_seconds']:.1f} s"
    )


def _cost(c: dict[str, Any]) -> str:
    ms = c.get("ms_per_image")
    return f"{c['forward_passes']} forward pass(es)" + ("" if ms is None else f", {ms:.1f} ms")


def _cost_line(c: dict[str, Any]) -> str:
    if c.get("ms_per_image") is None:
        return (f"inference cost: {c['forward_passes']} forward pass(es) per image (ms not measured: "
                f"the networks were not built, every image came from the cache)")
    return (f"inference cost: {c['forward_passes']} forward pass(es), {c['ms_per_image']:.1f} ms per image "
            f"(the networks alone, on {c['measured_on']})")


def _tail_lines(r: dict[str, Any]) -> list[str]:
    lines = r.get("notes", [])[:]
    for x in r["failures"][:20]:
        lines.append(f"  left out {x['path']}: {x['reason']}")
    for x in r["skipped"][:10]:
        lines.append(f"  skipped {x['path']}: {x['reason']}")
    return lines


def _no_cv_lines(r: dict[str, Any]) -> list[str]:
    """The summary of a fit no cross-validation could check (a class with one example)."""
    b = r["best"]
    return [
        f"fitted: {b['space']} -> {_candidate(b)}, the fixed default head, untuned",
        f"no estimate: {r['no_estimate']}",
        *([_cost_line(r["cost"])] if r.get("cost") else []),
        *([_unlabeled_line(r["unlabeled"])] if "unlabeled" in r else []),
        _featurize_line(r),
        f"saved {r['model']}",
        *_tail_lines(r),
    ]


def _unlabeled_line(u: dict[str, Any]) -> str:
    return f"unlabelled items ({u['n_pool']}): {u['reason']}"


def format_text(r: dict[str, Any]) -> str:
    honest = r.get("honest_score", float("nan"))
    b = r["best"]
    n_sp = r.get("n_spaces_cross_validated", 1)
    per = f" ({r['n_candidates'] // n_sp} per space x {n_sp} spaces)" if n_sp > 1 else ""
    if r.get("no_estimate"):
        return "\n".join(_no_cv_lines(r))
    lines = [
        f"best: {b['space']} -> {_candidate(b)}; CV {r['scoring']} {b['cv_score']:.4f} "
        f"+/- {b['cv_std']:.4f} (optimistic), honest {honest:.4f}",
        f"CV over {r['n_splits']} folds: {r['n_candidates']} candidates{per} searched in "
        f"{r['search_seconds']:.1f} s; chosen by the {b['selection']} rule",
        f"honest estimate {honest:.4f} (bootstrap bias-corrected CV of the whole selection)"
        if honest == honest
        else "honest estimate: not available for this scoring",
        *([_cost_line(r["cost"])] if r.get("cost") else []),
    ]
    cal = b.get("calibration")
    if cal:
        fitted = cal.get("fitted_temperature", cal["temperature"])
        how = (
            "fitted out of fold"
            if fitted == cal["temperature"]
            else f"(the head's own; {fitted:.3g} fitted out of fold did not lower the log-loss)"
        )
        lines.append(
            f"probabilities: temperature {cal['temperature']:.3g} {how}; out-of-fold "
            f"log-loss {cal['log_loss_before']:.3f} -> {cal['log_loss_after']:.3f}, calibration "
            f"error (ECE) {cal['ece_before']:.3f} -> {cal['ece_after']:.3f}"
        )
    lines.append("spaces tried (* chosen; the others show their top-scoring candidate):")
    top: dict[str, dict[str, Any]] = {}
    chosen = None
    for c in r.get("candidates_tried", []):
        t = top.get(c["space"])
        if t is None or c["mean_cv_score"] > t["mean_cv_score"]:
            top[c["space"]] = c
        if c.get("chosen"):
            chosen = c
    for sp in r.get("spaces_tried", []):
        mine = sp["space"] == b["space"]
        logme = f"LogME {sp['logme']:.3f} " if "logme" in sp else ""
        if mine:
            text = f"chosen CV {b['cv_score']:.4f} ({_candidate(b)})"
            t = top.get(sp["space"])
            if t is not None and t is not chosen and t["mean_cv_score"] > b["cv_score"] + 5e-5:
                text += f"; top CV {t['mean_cv_score']:.4f} ({_candidate(t)})"
        else:
            t = top.get(sp["space"])
            text = f"top CV {t['mean_cv_score']:.4f} ({_candidate(t)})" if t else ""
        mark = "*" if mine else " "
        cost = f" [{_cost(sp)}]" if "forward_passes" in sp else ""
        lines.append(f" {mark} {sp['space']}: {sp.get('status', '')} {logme}{text}{cost}".rstrip())
    if "unlabeled" in r:
        lines.append(_unlabeled_line(r["unlabeled"]))
    lines += [_featurize_line(r), f"saved {r['model']}"]
    if "finetune" in r and "history" not in r["finetune"]:  # texts: the contrastive fine-tune
        t = r["finetune"]
        lines.insert(0, f"fine-tuned the encoder contrastively: {t['steps_run']} step(s) (resumed after "
                        f"{t['resumed_from']}) on {t['n_train']} texts in {t['seconds']:.1f} s; encoder "
                        f"checkpoint {t['checkpoint']}; the CV scores below are optimistic (the encoder has "
                        f"seen every label): compare strategies with `deepfeat experiment`")
    elif "finetune" in r:
        t = r["finetune"]
        lines.insert(0, f"fine-tuned {len(t['history'])} epoch(s), best {t['best_epoch']}, on {t['n_train']} images "
                        f"(+{t['n_val']} validation) in {t['seconds']:.1f} s, {t['images_per_second']:.1f} images/s "
                        f"({t['device']} {t['precision']}); backbone checkpoint {t['checkpoint']}")
    lines += r.get("notes", [])
    for x in r["failures"][:20]:
        lines.append(f"  left out {x['path']}: {x['reason']}")
    for x in r["skipped"][:10]:
        lines.append(f"  skipped {x['path']}: {x['reason']}")
    return "\n".join(lines)
