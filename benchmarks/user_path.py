"""The user's path on a real data set, with defaults: fit -> evaluate -> predict -> serve
(torch) -> export -> serve --runtime onnx, for the model the default ``fit`` chooses and,
beside it, the single-network model (``fit --select none``).

Checks (exit 1 when one fails): the torch server answers 100 % of the test images and its
accuracy equals ``evaluate``'s; the ONNX server gives the same labels on >= 99.5 % of them.
Prints per model: forward passes per image, ms per image for predict (a fresh cache, so
every image is decoded and run through the networks), for serve (torch) and for serve
(onnx), the test accuracy, and the accuracy the default model gains over the
single-network one for its extra cost, with a paired-bootstrap 95 % interval and an exact
McNemar p-value over the test images.

    python benchmarks/user_path.py /work/data/oxford17/train /work/data/oxford17/test \\
        --cache /tmp/me/oxford17.h5 --work /tmp/me/user_path_oxford17

Wall-clock figures depend on the machine's load: run it on a quiet machine for figures.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deepfeat.classify.cost import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_models import free_port, start_server  # noqa: E402 - the tests' server helpers

DF = [sys.executable, "-m", "deepfeat.cli.main"]
EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
REQUEST_FILES = 16  # the server's default max_files


def cli(*args: str) -> dict:
    """Run ``deepfeat ARGS --json -q``; its JSON result."""
    r = subprocess.run([*DF, *args, "--json", "-q"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"deepfeat {' '.join(args)} failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def test_images(folder: str) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in EXTS and p.is_file())


def serve_all(args: list[str], images: list[Path]) -> tuple[dict[str, str], float, dict]:
    """Start ``deepfeat serve ARGS``, POST every image (requests of 16, one at a time);
    labels by path, ms per image of the POSTs, and /health afterwards."""
    import httpx

    port = free_port()
    proc = start_server(args, port, timeout=600)
    url = f"http://127.0.0.1:{port}/"
    try:
        labels: dict[str, str] = {}
        t0 = time.perf_counter()
        with httpx.Client(timeout=600) as client:
            for k in range(0, len(images), REQUEST_FILES):
                chunk = images[k:k + REQUEST_FILES]
                files = [("files", (str(i), p.read_bytes(), "application/octet-stream")) for i, p in enumerate(chunk)]
                r = client.post(url + "predict", files=files)
                for row in r.json().get("results", []):
                    if row.get("status") == "ok":
                        labels[str(chunk[int(row["name"])])] = str(row["label"])
            health = client.get(url + "health").json()
        ms = 1000 * (time.perf_counter() - t0) / len(images)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return labels, ms, health


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` (per-image correctness) and its 95 % percentile interval."""
    rng = np.random.default_rng(seed)
    d = a.astype(float) - b.astype(float)
    idx = rng.integers(0, len(d), size=(n, len(d)))
    boots = d[idx].mean(axis=1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value of paired correctness ``a`` vs ``b``."""
    from scipy.stats import binomtest

    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    return 1.0 if n01 + n10 == 0 else float(binomtest(n01, n01 + n10, 0.5).pvalue)


def walk(name: str, fit_args: list[str], a: argparse.Namespace, images: list[Path], work: Path) -> dict:
    """Fit, evaluate, predict, serve, export and serve the ONNX file of one model."""
    model = str(work / f"{name}.joblib")
    fit = cli("fit", a.train, "--out", model, "--cache", a.cache, *fit_args)
    ev = cli("evaluate", model, a.test, "--cache", a.cache)
    truth = {str(p): p.parent.name for p in images}
    # predict on a sample with a fresh cache: every image decoded and run through the networks
    sample = random.Random(0).sample(images, min(a.timed, len(images)))
    listing = work / f"{name}.sample.txt"
    listing.write_text("\n".join(str(p) for p in sample) + "\n")
    fresh = work / f"{name}.fresh.h5"
    pred = cli("predict", model, str(listing), "--out", str(work / f"{name}.sample.csv"), "--cache", str(fresh))
    torch_labels, torch_ms, health = serve_all([model], images)
    onnx_path = str(work / f"{name}.onnx")
    cli("export", model, "--format", "onnx", "--out", onnx_path)
    onnx_labels, onnx_ms, _ = serve_all([onnx_path, "--runtime", "onnx"], images)
    answered = len(torch_labels) / len(images)
    served_acc = float(np.mean([torch_labels.get(p) == truth[p] for p in truth]))
    agree = float(np.mean([onnx_labels.get(p) == torch_labels.get(p) for p in truth]))
    return {
        "model": model,
        "space": fit["space"],
        "forward_passes": fit["cost"]["forward_passes"],
        "fit_ms_per_image": fit["cost"]["ms_per_image"],
        "honest_score": fit["honest_score"],
        "evaluate_accuracy": ev["accuracy"],
        "served_accuracy": served_acc,
        "answered": answered,
        "onnx_agreement": agree,
        "predict_ms_per_image": 1000.0 / pred["throughput"]["images_per_second"],
        "serve_torch_ms_per_image": torch_ms,
        "serve_torch_health_images_per_second": health["throughput"]["images_per_second"],
        "serve_onnx_ms_per_image": onnx_ms,
        "correct": [torch_labels.get(str(p)) == truth[str(p)] for p in images],
        "checks": {
            "answered_100pct": answered == 1.0,
            "served_equals_evaluate": abs(served_acc - ev["accuracy"]) < 1e-9,
            "onnx_same_labels_99.5pct": agree >= 0.995,
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train", help="folder of class subfolders to fit on")
    p.add_argument("test", help="folder of class subfolders to test on")
    p.add_argument("--cache", required=True, help="HDF5 embedding cache (a copy: it is written to)")
    p.add_argument("--work", default=None, help="folder for models, ONNX files and CSVs")
    p.add_argument("--timed", type=int, default=100, help="test images predicted with a fresh cache")
    p.add_argument("--json-out", default=None, help="also write the figures as JSON")
    p.add_argument("--before", default=None,
                   help="a model saved by an earlier deepfeat (e.g. /work/runs/before/oxford17.joblib): "
                        "its test accuracy beside the default's, paired")
    a = p.parse_args()
    images = test_images(a.test)
    work = Path(a.work or f"user_path_{Path(a.train).parent.name}")
    work.mkdir(parents=True, exist_ok=True)
    rows = {"default": walk("default", [], a, images, work),
            "single": walk("single", ["--select", "none"], a, images, work)}
    d, s = rows["default"], rows["single"]
    ca, cb = np.array(d.pop("correct")), np.array(s.pop("correct"))
    gain, lo, hi = paired_bootstrap(ca, cb)
    print(f"{a.train} -> {a.test}: {len(images)} test images; {machine()}")
    head = f"{'model':8} {'space':60} {'passes':>6} {'predict':>8} {'torch':>8} {'onnx':>8} {'acc':>7}"
    print(head + "\n" + "-" * len(head))
    for k, r in rows.items():
        print(f"{k:8} {r['space'][:60]:60} {r['forward_passes']:>6} {r['predict_ms_per_image']:>6.1f}ms "
              f"{r['serve_torch_ms_per_image']:>6.1f}ms {r['serve_onnx_ms_per_image']:>6.1f}ms "
              f"{100 * r['evaluate_accuracy']:>6.2f}%")
    ratio = d["forward_passes"] / s["forward_passes"]
    print(f"default vs single: {ratio:.1f}x the forward passes, {d['serve_torch_ms_per_image'] / s['serve_torch_ms_per_image']:.2f}x "
          f"the torch serve time (one run); accuracy {100 * gain:+.2f} points, 95 % paired-bootstrap interval "
          f"[{100 * lo:+.2f}, {100 * hi:+.2f}], McNemar p = {mcnemar_p(ca, cb):.3g}")
    failed = [f"{k}: {c}" for k, r in rows.items() for c, ok in r["checks"].items() if not ok]
    for k, r in rows.items():
        print(f"{k}: answered {100 * r['answered']:.1f} %, served accuracy {100 * r['served_accuracy']:.2f} % "
              f"(evaluate {100 * r['evaluate_accuracy']:.2f} %), ONNX same labels on {100 * r['onnx_agreement']:.2f} %")
    before = None
    if a.before:
        csv = work / "before.csv"
        cli("predict", a.before, a.test, "--out", str(csv), "--cache", a.cache, "--trust")
        import pandas as pd

        got = dict(zip(pd.read_csv(csv)["path"].astype(str), pd.read_csv(csv)["label"].astype(str)))
        cbefore = np.array([got.get(str(p)) == p.parent.name for p in images])
        g, glo, ghi = paired_bootstrap(ca, cbefore)
        before = {"model": a.before, "accuracy": float(cbefore.mean()), "gain": [g, glo, ghi],
                  "mcnemar_p": mcnemar_p(ca, cbefore)}
        print(f"default vs {a.before}: {100 * cbefore.mean():.2f} % before, {100 * g:+.2f} points now, 95 % "
              f"interval [{100 * glo:+.2f}, {100 * ghi:+.2f}], McNemar p = {before['mcnemar_p']:.3g}")
    print("checks: " + ("all passed" if not failed else "FAILED " + "; ".join(failed)))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"cpu": machine(), "models": rows, "gain": [gain, lo, hi],
                                                "mcnemar_p": mcnemar_p(ca, cb), "before": before}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
