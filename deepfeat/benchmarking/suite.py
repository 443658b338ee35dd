"""The whole benchmark: throughput contenders, bf16, peak memory, cache reads, head search.

:func:`run_benchmark` runs the parts named in :class:`BenchConfig` and returns one
JSON-able dict; :func:`format_table` renders it for a terminal. Sizes come in three
tiers: ``quick`` (a smoke run, about a minute), the default (``make bench``, a few
minutes) and ``full`` (the sizes the performance targets are stated for).
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfeat.benchmarking.images import bench_images
from deepfeat.exceptions import InvalidParameterError
from deepfeat.featurize.runtime import cpu_count, cpu_has_native_bf16, resolve_runtime

__all__ = ["BenchConfig", "PARTS", "TARGETS", "run_benchmark", "format_table", "check_targets"]

log = logging.getLogger(__name__)

PARTS = ("throughput", "precision", "memory", "cache", "search", "onnx", "cache_write", "ray", "text")

#: Targets of the performance issue on a 2-core CPU without a GPU: name -> (figure, bound, kind)
TARGETS = {
    "end_to_end_vs_ceiling": (">=", 0.85),
    "speedup_vs_naive": (">=", 4.0),
    "speedup_vs_dataloader": (">=", 2.5),
    "bf16_mean_cosine": (">=", 0.99),
    "bf16_accuracy_difference_points": ("<=", 1.0),
    "peak_memory_growth_percent": ("<=", 10.0),
    "peak_memory_large_mib": ("<", 2048.0),
    "cache_read_vs_h5py_sequential": (">=", 0.5),
    "cache_write_max_seconds": ("<=", 1.0),
    "ray_overhead": ("<=", 0.2),
    "text_vs_sentence_transformers": (">=", 1.0),
    "text_vs_naive": (">=", 2.0),
}

_TIERS = {
    # images (default backbone), images (second backbone), repeats, precision train/class,
    # memory small/large, cache rows, search sizes
    "quick": {
        "images": 64,
        "images_second": 16,
        "repeats": 2,
        "precision_per_class": 4,
        "memory": (200, 600),
        "cache_rows": 20_000,
        "search_sizes": [150, 300],
        "cache_write_rows": [10_000, 100_000],
        "ray_images": 300,
        "text_sentences": 1_000,
    },
    "default": {
        "images": 192,
        "images_second": 48,
        "repeats": 3,
        "precision_per_class": 20,
        "memory": (1000, 5000),
        "cache_rows": 100_000,
        "search_sizes": [500, 1000],
        "cache_write_rows": [10_000, 100_000],
        "ray_images": 2_000,
        "text_sentences": 10_000,
    },
    "full": {
        "images": 1360,
        "images_second": 128,
        "repeats": 5,
        "precision_per_class": 40,
        "memory": (2000, 20_000),
        "cache_rows": 100_000,
        "search_sizes": [1000, 2000, 5000, 10_000],
        "cache_write_rows": [10_000, 100_000, 1_000_000],
        "ray_images": 20_000,
        "text_sentences": 10_000,
    },
}


@dataclass
class BenchConfig:
    """What to run and how big. ``None`` fields take the tier's value.

    Parameters
    ----------
    tier : {"quick", "default", "full"}
    parts : tuple of str
        Any of :data:`PARTS`.
    backbones : tuple of str
        The offline default and a torchvision model with random weights.
    workdir : str or None
        Scratch folder (kept); ``None``: a temporary folder, removed afterwards.
    datasets : str or None
        Folder holding ``oxford17`` (default ``../shared/datasets``).
    synthetic : bool
        Use generated scikit-image variants even when Oxford 17 is present.
    """

    tier: str = "default"
    parts: tuple[str, ...] = PARTS
    backbones: tuple[str, ...] = ("efficientnet_lite0", "torchvision:resnet50")
    images: int | None = None
    images_second: int | None = None
    repeats: int | None = None
    precision_per_class: int | None = None
    memory: tuple[int, int] | None = None
    cache_rows: int | None = None
    search_sizes: list[int] | None = None
    cache_write_rows: list[int] | None = None
    ray_images: int | None = None
    text_sentences: int | None = None
    ray_address: str | None = None
    workdir: str | None = None
    datasets: str | None = None
    synthetic: bool = False
    sizes: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.tier not in _TIERS:
            raise InvalidParameterError(f"tier must be one of {tuple(_TIERS)}, got {self.tier!r}")
        bad = [p for p in self.parts if p not in PARTS]
        if bad:
            raise InvalidParameterError(f"unknown benchmark part(s) {bad}; choose from {PARTS}")
        tier = _TIERS[self.tier]
        self.sizes = {
            k: (getattr(self, k) if getattr(self, k) is not None else v) for k, v in tier.items()
        }


def _machine() -> dict[str, Any]:
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        pass
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cpu": model,
        "cores_usable": cpu_count(),
        "avx512f": " avx512f" in flags,
        "avx512_bf16": " avx512_bf16" in flags,
        "amx": " amx_tile" in flags,
        "native_bf16": cpu_has_native_bf16(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "auto_runtime": resolve_runtime("auto", "auto").describe(),
        "torch": torch.__version__,
        "load_average_1min_at_start": None if load is None else round(load, 2),
    }


def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Run the configured parts; return every figure, the ratios and the target checks."""
    tmp = None
    if config.workdir:
        work = Path(config.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="deepfeat-bench-")
        work = Path(tmp.name)
    sz = config.sizes
    t_start = time.perf_counter()
    out: dict[str, Any] = {
        "tier": config.tier,
        "machine": _machine(),
        "sizes": {k: v for k, v in sz.items()},
        "workdir": str(work) if tmp is None else None,
    }
    try:
        if "throughput" in config.parts:
            from deepfeat.benchmarking.throughput import measure_throughput

            out["throughput"] = []
            for i, bb in enumerate(config.backbones):
                n = sz["images"] if i == 0 else sz["images_second"]
                imgs = bench_images(work, n, datasets=config.datasets, synthetic=config.synthetic)
                weights = "DEFAULT" if bb == "efficientnet_lite0" else None
                r = measure_throughput(
                    bb,
                    imgs.paths,
                    imgs.root,
                    work / "throughput",
                    repeats=sz["repeats"],
                    weights=weights,
                )
                r["images_source"] = imgs.source
                out["throughput"].append(r)
        if "precision" in config.parts:
            from deepfeat.benchmarking.precision import measure_precision

            per_class = sz["precision_per_class"]
            all_imgs = bench_images(
                work, 10**9, datasets=config.datasets, synthetic=config.synthetic
            )
            n_classes = len(np.unique(all_imgs.labels))
            imgs = bench_images(
                work,
                2 * per_class * n_classes,
                datasets=config.datasets,
                synthetic=config.synthetic,
            )
            out["precision"] = measure_precision(
                imgs.paths, imgs.labels, work / "precision", train_per_class=per_class
            )
            out["precision"]["images_source"] = imgs.source
        memory_result = None
        if "memory" in config.parts or "search" in config.parts:
            from deepfeat.benchmarking.memory import measure_memory

            src = bench_images(work, 68, datasets=config.datasets, synthetic=config.synthetic)
            small, large = sz["memory"]
            if "search" in config.parts:
                large = max(large, max(sz["search_sizes"]))
            memory_result = measure_memory(src.paths, work / "memory", small=small, large=large)
            memory_result["sources"] = src.source
            if "memory" in config.parts:
                out["memory"] = {
                    k: v for k, v in memory_result.items() if k not in ("listing", "cache")
                }
        if "cache" in config.parts:
            from deepfeat.benchmarking.cache_read import measure_cache_read

            out["cache_read"] = measure_cache_read(
                work / "cache", rows=sz["cache_rows"], repeats=sz["repeats"]
            )
        if "search" in config.parts:
            out["search"] = _search(memory_result, src, sz["search_sizes"])
        # the ONNX and Ray parts run the first backbone: pretrained where its weights are offline
        first_weights = "DEFAULT" if config.backbones[0] == "efficientnet_lite0" else None
        if "onnx" in config.parts:
            from deepfeat.benchmarking.onnx_runtime import measure_onnx_runtime

            imgs = bench_images(work, sz["images_second"], datasets=config.datasets, synthetic=config.synthetic)
            out["onnx"] = measure_onnx_runtime(config.backbones[0], imgs.paths, work / "onnx",
                                               repeats=sz["repeats"],
                                               weights=first_weights)
        if "cache_write" in config.parts:
            from deepfeat.benchmarking.cache_write import measure_cache_write

            out["cache_write"] = measure_cache_write(tuple(sz["cache_write_rows"]), folder=str(work))
        if "ray" in config.parts:
            from deepfeat.benchmarking.ray_overhead import make_photos, measure_ray_overhead

            src = bench_images(work, 10**9, datasets=config.datasets, synthetic=config.synthetic)
            photos = make_photos(src.paths, sz["ray_images"], work / f"ray-photos-{sz['ray_images']}")
            out["ray"] = measure_ray_overhead(photos, work / "ray", backbone=config.backbones[0],
                                              weights=first_weights,
                                              address=config.ray_address)
            out["ray"]["images_source"] = f"distinct shifted crops of {src.source}"
        if "text" in config.parts:
            out["text"] = _text_speed(config.datasets, sz["text_sentences"])
    finally:
        if tmp is not None:
            tmp.cleanup()
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    out.update(_headline(out))
    out["targets"] = check_targets(out)
    return out


def _text_speed(datasets: str | None, n: int) -> dict[str, Any]:
    """Sentences/s on real sentences (:mod:`deepfeat.benchmarking.text_speed`), or why not."""
    import importlib.util

    from deepfeat.benchmarking.images import default_datasets_dir

    root = Path(datasets) if datasets else default_datasets_dir()
    missing = [m for m in ("transformers", "sentence_transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"needs {', '.join(missing)} (pip install 'deepfeat[bench-text]')"}
    if not (root / "text" / "sms_spam").is_dir():
        return {"skipped": f"no real sentences under {root / 'text'}"}
    from deepfeat.benchmarking.text_speed import measure_text_speed, real_sentences

    return measure_text_speed(real_sentences(n, root))


def _search(memory_result: dict[str, Any], src: Any, sizes: list[int]) -> dict[str, Any]:
    from deepfeat.benchmarking.memory import variant_source
    from deepfeat.benchmarking.search import load_cached, measure_search
    from deepfeat.featurize.decode import read_bytes
    from deepfeat.featurize.hashing import hash_bytes

    try:
        import deepfeat.classify.search  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"deepfeat.classify.search is not available ({exc})"}
    paths = Path(memory_result["listing"]).read_text().split("\n")
    keys = [hash_bytes(read_bytes(p)) for p in paths]
    x = load_cached(Path(memory_result["cache"]), keys)
    y = np.array([src.labels[variant_source(i, len(src.paths))] for i in range(len(paths))])
    sizes = sorted({min(n, len(y)) for n in sizes})
    res = measure_search(x, y, sizes)
    res["embeddings"] = (
        f"{memory_result['backbone']} embeddings of the peak-memory images (crops of "
        f"{len(src.paths)} photos), labelled by the photo's class"
    )
    return res


def _headline(out: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, flat, from the default backbone's run."""
    h: dict[str, Any] = {}
    tp = out.get("throughput") or []
    if tp:
        first = tp[0]
        h["images_per_second"] = {
            f"{r['backbone']}": {k: v["images_per_second"] for k, v in r["contenders"].items()}
            for r in tp
        }
        for k in ("end_to_end_vs_ceiling", "speedup_vs_naive", "speedup_vs_dataloader"):
            h[k] = first[k]
            h[k + "_by_backbone"] = {r["backbone"]: r[k] for r in tp}
    pr = out.get("precision")
    if pr:
        h["bf16_mean_cosine"] = pr["bf16_mean_cosine"]
        h["bf16_accuracy_difference_points"] = pr["accuracy_difference_points"]
    mem = out.get("memory")
    if mem:
        h["peak_memory_small_mib"] = mem["peak_rss_mib_small"]
        h["peak_memory_large_mib"] = mem["peak_rss_mib_large"]
        h["peak_memory_growth_percent"] = mem["peak_growth_percent"]
    cr = out.get("cache_read")
    if cr:
        h["cache_read_vs_h5py_sequential"] = cr["cache_read_vs_h5py_sequential"]
        h["cache_read_float32_vs_h5py_sequential"] = cr["cache_read_float32_vs_h5py_sequential"]
    cw = out.get("cache_write")
    if cw:
        h["cache_write_max_seconds"] = max(r["seconds"] for r in cw["rows"])
    ray = out.get("ray")
    if ray and "ray_overhead" in ray:
        h["ray_overhead"] = ray["ray_overhead"]
    text = out.get("text")
    if text and "text_vs_naive" in text:
        h["text_vs_sentence_transformers"] = text["text_vs_sentence_transformers"]
        h["text_vs_naive"] = text["text_vs_naive"]
        h["sentences_per_second"] = text["sentences_per_second"]
    return h


def check_targets(out: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured value and whether it is met (``None``: not measured)."""
    res = {}
    for name, (op, bound) in TARGETS.items():
        v = out.get(name)
        met = (
            None
            if v is None
            else (v >= bound if op == ">=" else v <= bound if op == "<=" else v < bound)
        )
        res[name] = {"target": f"{op} {bound:g}", "value": v, "met": met}
    return res


def config_dict(config: BenchConfig) -> dict[str, Any]:
    return asdict(config)


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(out: dict[str, Any]) -> str:
    """Render a benchmark result as plain-text tables."""
    m = out["machine"]
    lines = [
        f"deepfeat bench ({out['tier']}): {m['cpu']}, {m['cores_usable']} cores, "
        f"native bf16: {'yes' if m['native_bf16'] else 'no'}, GPU: {m['gpu'] or 'none'}, "
        f"auto runtime: {m['auto_runtime']}, load average at start {m['load_average_1min_at_start']}"
    ]
    for r in out.get("throughput", []):
        lines += [
            "",
            f"Throughput: {r['backbone']} ({r['weights']} weights), {r['images']} images, "
            f"{r['runtime']}, median of {r['repeats']} alternating rounds",
            f"  {r['images_source']}",
            f"  {'contender':<10} {'images/s':>9}  {'runs':<28} {'min cos vs deepfeat':>19}  what",
        ]
        for name, c in r["contenders"].items():
            runs = " ".join(f"{v:.1f}" for v in c["runs"])
            lines.append(
                f"  {name:<10} {c['images_per_second']:>9.2f}  {runs:<28} {c['min_cosine_vs_deepfeat']:>19.4f}"
                f"  {c['description']}"
            )
        lines.append(
            f"  deepfeat / ceiling {r['end_to_end_vs_ceiling']:.3f}   deepfeat / naive "
            f"{r['speedup_vs_naive']:.2f}x   deepfeat / tutorial {r['speedup_vs_dataloader']:.2f}x   "
            f"(medians of per-round ratios)"
        )
    pr = out.get("precision")
    if pr:
        lines += [
            "",
            f"bf16 vs fp32 ({pr['backbone']}, {pr['images']} images; precision=auto picks "
            f"{pr['auto_precision_cpu']} on this CPU, native bf16: {'yes' if pr['native_bf16'] else 'no'}):",
            f"  mean cosine {pr['bf16_mean_cosine']:.5f} (min {pr['bf16_min_cosine']:.5f}); accuracy fp32 "
            f"{pr['accuracy_fp32'] * 100:.2f} %, bf16 {pr['accuracy_bf16'] * 100:.2f} % "
            f"(difference {pr['accuracy_difference_points']:.2f} points); {pr['split']}",
            f"  forced bf16 runs at {pr['images_per_second_bf16_forced']:.1f} images/s vs fp32 "
            f"{pr['images_per_second_fp32']:.1f} (emulated where not native)",
        ]
    mem = out.get("memory")
    if mem:
        lines += ["", f"Peak memory ({mem['backbone']}, fresh process, return_features=False):"]
        for n, r in mem["runs"].items():
            lines.append(
                f"  {int(n):>7,} images: peak RSS {r['peak_rss_mib']:8.1f} MiB  ({r['seconds']:.1f} s, "
                f"cache {r['cache_mib']:.1f} MiB)"
            )
        lines.append(f"  growth {mem['peak_growth_percent']:+.2f} %")
    cr = out.get("cache_read")
    if cr:
        lines += [
            "",
            f"Cache read: {cr['rows']:,} rows x {cr['dim']} {cr['dtype']} ({cr['stored_mb']} MB stored), "
            f"requested in random order; rows correct and aligned: {cr['rows_correct_and_aligned']}",
        ]
        for name in ("h5py_sequential", "cache_read", "cache_read_float32", "cache_read_warm"):
            c = cr[name]
            lines.append(
                f"  {name:<18} {c['seconds']:7.3f} s  {c['rows_per_second']:>9,} rows/s  "
                f"{c['mb_per_second']:7.1f} MB/s"
            )
        lines.append(
            f"  FeatureCache.read / h5py sequential: {cr['cache_read_vs_h5py_sequential']:.3f} as stored "
            f"(float16, like for like); {cr['cache_read_float32_vs_h5py_sequential']:.3f} widened to float32; "
            f"{cr['cache_read_warm_vs_h5py_sequential']:.3f} with the index already loaded"
        )
    cw = out.get("cache_write")
    if cw:
        from deepfeat.benchmarking.cache_write import format_cache_write

        lines += ["", "Cache write: " + format_cache_write(cw).replace("\n", "\n  ")]
    ray = out.get("ray")
    if ray and "skipped" in ray:
        lines += ["", f"Ray overhead: skipped: {ray['skipped']}"]
    elif ray:
        lines += [
            "",
            f"Ray overhead: {ray['images']:,} photos ({ray['images_source']}), {ray['backbone']}, "
            f"Ray resources {ray['ray_resources']}, median of {len(ray['rounds'])} alternating rounds",
        ]
        for i, r in enumerate(ray["rounds"]):
            lines.append(f"  round {i + 1}: local {r['local_seconds']:.1f} s, ray {r['ray_seconds']:.1f} s "
                         f"(+{100 * r['ray_overhead']:.1f} %), load before {r['local_load_before']:.2f} / "
                         f"{r['ray_load_before']:.2f}")
        lines.append(f"  ray / local - 1: {100 * ray['ray_overhead']:+.1f} %; same rows featurized: "
                     f"{ray['featurized_equal']}")
    tx = out.get("text")
    if tx and "skipped" in tx:
        lines += ["", f"Text featurizing: skipped: {tx['skipped']}"]
    elif tx:
        lines += ["", f"Text featurizing: {tx['sentences']:,} real sentences, all-MiniLM-L6-v2, batch "
                      f"{tx['batch_size']}, {tx['precision']} (rows agree with sentence-transformers to "
                      f"{tx['max_abs_diff_vs_sentence_transformers']:.1e}):"]
        lines += [f"  {k:<32} {v:8.1f} sentences/s" for k, v in tx["sentences_per_second"].items()]
        lines += [f"  {k:<44} {v:.2f}x" for k, v in tx["ratios"].items()]
    se = out.get("search")
    if se:
        lines += ["", "Default head search (build_search):"]
        if "skipped" in se:
            lines.append(f"  skipped: {se['skipped']}")
        for r in se.get("runs", []):
            k = r.get("scaling_exponent_vs_previous")
            lines.append(
                f"  n={r['n']:>6,} dim={r['dim']} classes={r['classes']}: {r['seconds']:8.1f} s, "
                f"{r['candidates']} candidates x {r['folds']} folds"
                + (f", time ~ n^{k}" if k is not None else "")
            )
    ox = out.get("onnx")
    if ox:
        lines += ["", "onnxruntime vs torch (the exported network, uint8 crops in, CPU, fp32):"]
        if "skipped" in ox:
            lines.append(f"  skipped: {ox['skipped']}")
        else:
            lines.append(
                f"  {ox['backbone']}, {ox['images']} crops in batches of {ox['batch']}: torch "
                f"{ox['torch_images_per_second']:.1f} images/s ({ox['torch_threads']} threads), onnxruntime "
                f"{ox['onnxruntime_images_per_second']:.1f} images/s: x{ox['onnxruntime_vs_torch']:.2f} "
                f"(max |diff| of embeddings {ox['max_abs_diff']:.1e})"
            )
    tg = out.get("targets")
    if tg:
        lines += ["", "Targets:"]
        for name, t in tg.items():
            mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            lines.append(
                f"  {name:<36} {t['target']:<8} {_fmt(t['value'], '.3f') if t['value'] is not None else '-':>9}"
                f"  {mark}"
            )
    lines.append(f"\n{out['seconds']:.0f} s in all")
    return "\n".join(lines)
