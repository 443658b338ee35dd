"""``deepfeat cache``: check a cache (``verify``), salvage it (``repair``), merge its segments (``compact``)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from deepfeat.exceptions import InputError, InvalidParameterError
from deepfeat.store import FeatureCache, repair_cache, verify_cache

HELP = (
    "verify FILE: check a cache file, its segments and its journal; repair FILE --out NEW: salvage "
    "intact rows; compact FILE: merge the segments into one file"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action", choices=("verify", "repair", "compact"),
        help="verify (exit 1 on problems), repair, or compact",
    )
    p.add_argument("file", help="the .h5 cache file")
    p.add_argument(
        "--out", default=None, help="repair: the new cache file to write (must not exist)"
    )


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    if args.action == "verify":
        res = verify_cache(args.file)
        return {"action": "verify", **res}, 0 if res["ok"] else 1
    if args.action == "compact":
        if not os.path.exists(args.file):
            raise InputError(f"{args.file}: no such cache file")
        return {"action": "compact", "path": args.file, **FeatureCache(args.file).compact()}, 0
    if not args.out:
        raise InvalidParameterError(
            "cache repair needs --out NEW.h5 (the damaged file is never modified)"
        )
    res = repair_cache(args.file, args.out)
    return {"action": "repair", **res}, 0 if res["verified"] else 1


def format_text(r: dict[str, Any]) -> str:
    if r["action"] == "compact":
        return (
            f"{r['path']}: {r['segments_before']} segment(s) merged into one file: "
            f"{r['rows']} row(s), {r['bytes'] / 1e6:.1f} MB"
        )
    if r["action"] == "verify":
        lines = [f"{r['path']}: {'OK' if r['ok'] else 'PROBLEMS FOUND'}"]
        if r.get("segments"):
            lines[0] += f" ({r['segments']} segments; `deepfeat cache compact` merges them)"
        for name, sp in r["spaces"].items():
            desc = f"  space {name}: {sp.get('rows', 0)} rows"
            if "dim" in sp:
                desc += f" x {sp['dim']} {sp['dtype']}"
            if sp.get("journal_rows"):
                desc += f", {sp['journal_rows']} more in the journal"
            lines.append(desc)
        j = r.get("journal") or {}
        if j.get("bytes"):
            lines.append(
                f"  journal: {j['records']} intact record(s), {j['rows']} row(s), {j['bytes']} bytes"
            )
        lines += [f"  problem: {p}" for p in r["problems"]]
        lines += [f"  warning: {w}" for w in r["warnings"]]
        if not r["ok"]:
            lines.append(
                f"  salvage the intact rows with: deepfeat cache repair {r['path']} --out NEW.h5"
            )
        return "\n".join(lines)
    lines = [
        f"{r['source']} -> {r['out']}: {r['rows_salvaged']} row(s) salvaged, {r['rows_dropped']} dropped; "
        f"new file {'verified OK' if r['verified'] else 'NOT verified'}"
    ]
    for name, sp in r["spaces"].items():
        lines.append(f"  space {name}: {sp['salvaged']} salvaged of {sp['declared_rows']} stored")
        lines += [f"    {n}" for n in sp["notes"][:10]]
    j = r["journal"]
    if j.get("records"):
        lines.append(
            f"  journal: {j['rows_added']} row(s) added from {j['records']} intact record(s)"
        )
    lines += [f"  note: {n}" for n in r["source_notes"]]
    return "\n".join(lines)
