"""Load test of ``deepfeat serve``: a real server process on 127.0.0.1, N clients for T seconds.

Usage: python benchmarks/serve_load.py [--model M.joblib | --model M.onnx --runtime onnx]
       [--clients 8] [--seconds 20] [--overload] [--json]

Without ``--model`` a small random-weight dark/light classifier is fitted into a temporary
folder (what the tests serve). Each client posts one JPEG photo per request, back to back,
over a keep-alive connection. Reported: requests/s, p50/p99 latency, failed requests (any
status but 200), the server's RSS after warm-up and at the end, the machine's load.
``--overload`` then restarts the server with a small queue (``--max-queue 4``), sends it
4x the clients, counts the 503s, and checks it recovers: one client afterwards must get
only 200s and the process must still be alive.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo_jpeg() -> bytes:
    from PIL import Image

    try:
        from skimage.data import chelsea

        img = Image.fromarray(chelsea())
    except ImportError:
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)).resize((451, 300))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def fit_default_model(d: Path) -> Path:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from serve_models import fit_tiny

    return fit_tiny(d / "tones.joblib")


def start(model: str, runtime: str, port: int, extra: list[str]) -> subprocess.Popen:
    # the CLI imports only the subcommand it runs: with --runtime onnx, torch is never imported
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfeat.cli.main", "serve", "-q", model, "--runtime", runtime, "--port", str(port), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not come up")


def hammer(port: int, clients: int, seconds: float, body: bytes, pid: int | None = None) -> dict:
    """``clients`` threads posting ``body`` for ``seconds``; samples the server's RSS every 5 s."""
    import httpx

    url = f"http://127.0.0.1:{port}/predict"
    lat: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=60) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    code = str(c.post(url, files=[("files", ("photo.jpg", body, "image/jpeg"))]).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == "200":
                        lat.append(dt)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    samples, next_sample = [], time.monotonic()
    while pid is not None and any(t.is_alive() for t in threads):
        if time.monotonic() >= next_sample:
            samples.append(round(rss_mib(pid), 1))
            next_sample += 5.0
        time.sleep(0.1)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    n = sum(codes.values())
    ms = np.array(lat) * 1000
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": n,
        "ok": codes.get("200", 0),
        "failed": n - codes.get("200", 0),
        "status_counts": codes,
        "requests_per_s": round(codes.get("200", 0) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "rss_samples_mib": samples,
    }


def run(args: argparse.Namespace) -> dict:
    body = photo_jpeg()
    tmp = tempfile.TemporaryDirectory(prefix="deepfeat-serve-load-")
    os.environ.setdefault("DEEPFEAT_TRUST_STORE", os.path.join(tmp.name, "trust.txt"))
    model = args.model or str(fit_default_model(Path(tmp.name)))
    out: dict = {"model": model, "runtime": args.runtime, "load_before": os.getloadavg()}
    port = free_port()
    proc = start(model, args.runtime, port, [])
    try:
        hammer(port, args.clients, min(3.0, args.seconds), body)  # warm-up
        rss0 = rss_mib(proc.pid)
        res = hammer(port, args.clients, args.seconds, body, proc.pid)
        res.update(rss_start_mib=round(rss0, 1), rss_end_mib=round(rss_mib(proc.pid), 1))
        out["steady"] = res
    finally:
        proc.terminate()
        proc.wait(30)
    if args.overload:
        port = free_port()
        proc = start(model, args.runtime, port, ["--max-queue", "4", "--max-batch", "4"])
        try:
            over = hammer(port, 4 * args.clients, args.seconds, body)
            over["rss_end_mib"] = round(rss_mib(proc.pid), 1)
            after = hammer(port, 1, 3.0, body)
            over["recovery"] = {k: after[k] for k in ("requests", "ok", "failed", "p50_ms")}
            over["alive"] = proc.poll() is None
            out["overload"] = over
        finally:
            proc.terminate()
            proc.wait(30)
    out["load_after"] = os.getloadavg()
    tmp.cleanup()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--overload", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    r = run(args)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"model {r['model']} ({r['runtime']}); load average before {r['load_before']}, after {r['load_after']}")
    s = r["steady"]
    print(f"steady: {s['clients']} clients x {s['seconds']} s: {s['requests_per_s']} req/s, "
          f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, failed {s['failed']} of {s['requests']}, "
          f"RSS {s['rss_start_mib']} -> {s['rss_end_mib']} MiB (every 5 s: {s['rss_samples_mib']})")
    if "overload" in r:
        o = r["overload"]
        print(f"overload (--max-queue 4): {o['clients']} clients x {o['seconds']} s: statuses {o['status_counts']}, "
              f"{o['requests_per_s']} req/s answered; then 1 client: {o['recovery']['ok']} of "
              f"{o['recovery']['requests']} ok; server alive: {o['alive']}; RSS end {o['rss_end_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
