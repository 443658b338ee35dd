"""The user's path at many classes: fit -> evaluate -> predict --json -> serve, all defaults.

A set of ``--classes`` classes is generated from real photos (``../shared/datasets``,
oxford17 and brain_mri4): each class is one source photo, its images are shifted crops of
it (made-up labels, so the set is learnable but says nothing about accuracy). Every step
runs through the ``deepfeat`` command line with default options; the script checks that
each exits 0 and that every table is complete (one probability per class per image, one
row per class in the report), and prints a line per step.

Usage::

    python benchmarks/many_classes.py --classes 300 --work /tmp/many300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

_HERE = Path(__file__).resolve()
DATA = next(
    (p / "shared" / "datasets" for p in _HERE.parents[2:4] if (p / "shared" / "datasets").is_dir()),
    _HERE.parents[1].parent / "shared" / "datasets",
)


def make_set(work: Path, n_classes: int, n_train: int, n_test: int, seed: int = 0) -> None:
    sources = sorted((DATA / "oxford17").rglob("*.jpg")) + sorted((DATA / "brain_mri4" / "train").rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(sources), size=n_classes, replace=False)
    for c, i in enumerate(picked):
        img = Image.open(sources[i]).convert("RGB")
        w, h = img.size
        for j in range(n_train + n_test):
            cw, ch = int(w * 0.8), int(h * 0.8)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            split = "train" if j < n_train else "test"
            d = work / split / f"class_{c:04d}"
            d.mkdir(parents=True, exist_ok=True)
            img.crop((x, y, x + cw, y + ch)).resize((224, 224)).save(d / f"{j}.jpg", quality=90)


def deepfeat(*args: str) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deepfeat.cli.main", *args], capture_output=True, text=True)
    print(f"deepfeat {args[0]}: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s", flush=True)
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(1)
    return proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=300)
    ap.add_argument("--train", type=int, default=4, help="images per class to fit on")
    ap.add_argument("--test", type=int, default=2, help="images per class to evaluate on")
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(_HERE.parents[1] / "tests"))
    from serve_models import free_port, start_server

    work = args.work
    if not (work / "train").is_dir():
        make_set(work, args.classes, args.train, args.test)
    model, cache = str(work / "m.joblib"), str(work / "c.h5")
    n = args.classes
    fit = json.loads(deepfeat("fit", str(work / "train"), "--out", model, "--cache", cache, "--json", "-q").stdout)
    print(f"  chose {fit['best_pipeline'][:120]}")
    ev = json.loads(deepfeat("evaluate", model, str(work / "test"), "--cache", cache, "--json", "-q").stdout)
    assert len(ev["per_class"]) == n and np.asarray(ev["confusion_matrix"]).shape == (n, n), "evaluate table"
    text = deepfeat("evaluate", model, str(work / "test"), "--cache", cache, "-q").stdout
    print(f"  accuracy {ev['accuracy']:.4f}; text report {len(text.splitlines())} lines, "
          f"widest {max(len(x) for x in text.splitlines())} characters")
    csv = work / "predictions.csv"
    pr = json.loads(deepfeat("predict", model, str(work / "test"), "--out", str(csv), "--cache", cache,
                             "--json", "-q").stdout)
    import pandas as pd

    table = pd.read_csv(csv)
    probas = [c for c in table.columns if c.startswith("proba_")]
    n_test = n * args.test
    print(f"  predict --json: {pr['n_ok']} of {pr['n_inputs']} labelled, {len(pr['label_counts'])} classes "
          f"counted; CSV {len(table)} rows x {len(probas)} probability columns")
    assert len(table) == n_test and len(probas) == n and table[probas].notna().all(axis=None), "predict"
    rows = table.to_dict("records")
    port = free_port()
    proc = start_server([model], port)
    try:
        import httpx

        files = sorted((work / "test").rglob("*.jpg"))
        answered, agree = 0, 0
        by_path = {Path(r["path"]).resolve(): r["label"] for r in rows}
        for chunk in range(0, len(files), 16):
            part = files[chunk : chunk + 16]
            r = httpx.post(f"http://127.0.0.1:{port}/predict",
                           files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in part], timeout=300)
            assert r.status_code == 200, r.text[:300]
            for p, res in zip(part, r.json()["results"]):
                assert res["status"] == "ok" and len(res["probabilities"]) == n, "served probabilities"
                answered += 1
                agree += str(res["label"]) == str(by_path[p.resolve()])
        print(f"  serve: {answered}/{len(files)} answered with {n} probabilities each; "
              f"same label as predict: {agree}/{answered}")
    finally:
        proc.terminate()
        proc.wait(30)
    print("all steps exit 0, every table complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
