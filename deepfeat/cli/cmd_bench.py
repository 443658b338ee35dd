"""``deepfeat bench``: measure featurizing speed against a model-only ceiling and the
usual hand-written pipelines, bf16 agreement, peak memory, cache reads and head search."""

from __future__ import annotations

import argparse
from typing import Any

from deepfeat.benchmarking.suite import PARTS, BenchConfig, format_table, run_benchmark
from deepfeat.cli.validate import comma_choices, integer

HELP = "benchmark: images/s vs model-only ceiling, naive loop and DataLoader tutorial; bf16; memory; cache reads"


_positive = integer(1)


def _ints(value: str) -> list[int]:
    items = [v for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {value!r}")
    return [_positive(v.strip()) for v in items]


def _two_ints(value: str) -> list[int]:
    counts = _ints(value)
    if len(counts) != 2:
        raise argparse.ArgumentTypeError(f"takes two counts, SMALL,LARGE, got {value!r}")
    return counts


_parts_list = comma_choices(PARTS)


def _parts(value: str) -> tuple[str, ...]:
    return tuple(_parts_list(value))


def add_arguments(p: argparse.ArgumentParser) -> None:
    tier = p.add_mutually_exclusive_group()
    tier.add_argument("--quick", action="store_true", help="smoke-test sizes (about a minute)")
    tier.add_argument(
        "--full",
        action="store_true",
        help="the sizes the targets are stated for (1,360 photos, 20,000 images for memory, "
        "search up to 10,000 rows); long",
    )
    p.add_argument(
        "--parts", type=_parts, default=PARTS, help=f"comma-separated subset of {','.join(PARTS)}"
    )
    p.add_argument(
        "--backbones",
        default="efficientnet_lite0,torchvision:resnet50",
        help="comma-separated backbones for the throughput part (the first one gives the headline)",
    )
    p.add_argument(
        "--images", type=_positive, default=None, help="photos for the first backbone's throughput runs"
    )
    p.add_argument("--images-second", type=_positive, default=None, help="photos for the other backbones")
    p.add_argument(
        "--repeats", type=_positive, default=None, help="alternating rounds (medians are reported)"
    )
    p.add_argument(
        "--memory",
        type=_two_ints,
        default=None,
        metavar="SMALL,LARGE",
        help="image counts of the two peak-memory runs",
    )
    p.add_argument("--cache-rows", type=_positive, default=None, help="rows of the cache-read test")
    p.add_argument("--cache-write-rows", type=_ints, default=None, metavar="N,N,...",
                   help="cache sizes the cache-write test adds 5 rows to")
    p.add_argument("--ray-images", type=_positive, default=None, help="photos of the Ray-overhead test")
    p.add_argument("--text-sentences", type=_positive, default=None,
                   help="real sentences of the text-featurizing test (needs the bench-text extra)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster for the Ray-overhead test (default: a local Ray with 2 CPUs)")
    p.add_argument(
        "--search-sizes", type=_ints, default=None, metavar="N,N,...", help="head-search sizes"
    )
    p.add_argument(
        "--workdir", default=None, help="keep images and caches here (default: a temporary folder)"
    )
    p.add_argument(
        "--datasets", default=None, help="folder holding oxford17 (default: ../shared/datasets)"
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use re-encoded scikit-image photos even when Oxford 17 is present",
    )


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    mem = tuple(args.memory) if args.memory else None
    cfg = BenchConfig(
        tier="quick" if args.quick else "full" if args.full else "default",
        parts=args.parts,
        backbones=tuple(b.strip() for b in args.backbones.split(",") if b.strip()),
        images=args.images,
        images_second=args.images_second,
        repeats=args.repeats,
        memory=mem,
        cache_rows=args.cache_rows,
        search_sizes=args.search_sizes,
        cache_write_rows=args.cache_write_rows,
        ray_images=args.ray_images,
        text_sentences=args.text_sentences,
        ray_address=args.ray_address,
        workdir=args.workdir,
        datasets=args.datasets,
        synthetic=args.synthetic,
    )
    return run_benchmark(cfg), 0


def format_text(result: dict[str, Any]) -> str:
    return format_table(result)
