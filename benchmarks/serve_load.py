"""Load test of `trm serve` on loopback: N requests from C concurrent clients, with and without batching.

    python benchmarks/serve_load.py [CKPT] --requests 200 --clients 16 [--json out.json] [-- trm serve options]

Starts `trm serve CKPT` on a free 127.0.0.1 port twice (batching on, then --no-batching), sends both the same
puzzles (POST /solve; each client one keep-alive connection, its requests back to back) and reports p50 / p99
latency, throughput, and the engine's forward passes and mean batch (from /health). Bounded: at most
--requests requests and --max-seconds per mode, to this machine's loopback only. Without CKPT it serves an
untrained model of sudoku9-cpu's shape (with the fixed halting policy the timings do not depend on the
weights). Puzzles: shared/data/sudoku's magictour list where present, else generated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from trm.tasks.sudoku import generate, split_puzzles

PUZZLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "sudoku" / "puzzles3_magictour_top1465"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def puzzles(n: int) -> tuple[list[str], str]:
    if PUZZLES.is_file():
        return split_puzzles(PUZZLES.read_text().splitlines())[:n], PUZZLES.name
    grids = generate(min(n, 50), 9, np.random.default_rng(0))
    return ["".join(str(v) if v else "." for v in g) for g, _, _ in grids], "generated"


def untrained_checkpoint(directory: Path) -> Path:
    from trm.config import build_train_config
    from trm.models import build_model

    build_model(build_train_config("sudoku9-cpu").model).save_pretrained(directory)
    (directory / "task.json").write_text(json.dumps({"task": "sudoku", "size": 9}))
    return directory


def start_server(ckpt: Path, options: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "trm.cli", "serve", str(ckpt), "--host", "127.0.0.1", "--port", str(port), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"trm serve did not start: {proc.communicate()[1]}")


async def load(url: str, work: list[str], clients: int, max_seconds: float) -> dict:
    """`clients` workers take puzzles from `work` in order until it is empty or the time is up."""
    latencies: list[float] = []
    errors = 0
    nxt = 0
    deadline = time.perf_counter() + max_seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal nxt, errors
        while nxt < len(work) and time.perf_counter() < deadline:
            puzzle, nxt = work[nxt], nxt + 1
            t0 = time.perf_counter()
            r = await http.post(f"{url}/solve", json={"task": "sudoku", "puzzle": puzzle})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_ms": round(float(ms.mean()), 1),
    }


def run_mode(ckpt: Path, options: list[str], work: list[str], args: argparse.Namespace) -> dict:
    proc, url = start_server(ckpt, options)
    try:
        asyncio.run(load(url, work[: args.clients], args.clients, args.max_seconds))  # warm-up, not counted
        before = httpx.get(f"{url}/health").json()
        result = asyncio.run(load(url, work, args.clients, args.max_seconds))
        after = httpx.get(f"{url}/health").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    passes, rows = after["forward_passes"] - before["forward_passes"], after["rows"] - before["rows"]
    result.update(forward_passes=passes, mean_batch=round(rows / max(passes, 1), 2))
    result.update({k: after[k] for k in ("largest_batch", "policy", "max_steps", "max_batch")})
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", type=Path, help="a 9x9 Sudoku checkpoint (default: untrained)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=300, help="time limit per mode")
    p.add_argument("--json", type=Path, help="write the results here")
    args, serve_options = p.parse_known_args()
    serve_options = [o for o in serve_options if o != "--"]
    pool, source = puzzles(args.requests)
    work = [pool[i % len(pool)] for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or untrained_checkpoint(Path(tmp) / "sudoku9")
        modes = {"batching": serve_options, "no batching": [*serve_options, "--no-batching"]}
        results = {name: run_mode(ckpt, options, work, args) for name, options in modes.items()}
    meta = {
        "checkpoint": str(args.checkpoint or "untrained sudoku9-cpu"),
        "puzzles": source,
        "clients": args.clients,
        "serve_options": serve_options,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "load_average": [round(x, 2) for x in os.getloadavg()],  # at the end, this test included
        "date": time.strftime("%Y-%m-%d"),
    }
    r = results["batching"]
    print(
        f"# {meta['checkpoint']} (policy {r['policy']}, at most {r['max_steps']} steps), {meta['puzzles']}: "
        f"{args.requests} requests from {args.clients} clients; {meta['machine']}, load {meta['load_average']}"
    )
    print("| mode | requests | errors | p50 ms | p99 ms | requests/s | forward passes | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['requests']} | {r['errors']} | {r['p50_ms']} | {r['p99_ms']} | {r['throughput_rps']} | "
            f"{r['forward_passes']} | {r['mean_batch']} |"
        )
    speedup = results["batching"]["throughput_rps"] / max(results["no batching"]["throughput_rps"], 1e-9)
    print(f"batching: {speedup:.2f}x the throughput")
    if args.json:
        args.json.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
