"""Behaviour-policy inference with the default BLAS threads vs one thread, idle and under load.

    python benchmarks/blas_threads.py [--calls 2000]

Times ``Actor.act`` on a batch of 16 observations (as ``seqrl data make`` calls it) with the shipped
hopper expert, with OpenBLAS's default thread count and inside ``threadpool_limits(1)`` (what
``seqrl.data.collect`` uses), first on an idle machine, then with one busy-looping process per core
(standing in for a training run beside the data making). Writes benchmarks/results/blas_threads.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _us_per_call(actor, obs, calls: int) -> float:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(calls):
        actor.act(obs, rng)
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    from seqrl.bench.machine import git_commit, machine_info, write_result
    from seqrl.data.recipes import default_policy_root
    from seqrl.policies.actor import load_actor

    root = default_policy_root() / "hopper"
    actor = load_actor(root / json.loads((root / "manifest.json").read_text())["expert"])
    obs = np.random.default_rng(0).standard_normal((16, 11)).astype(np.float32)
    rows = {}
    for load in ("idle", "one busy process per core"):
        stop = mp.Event()
        spinners = [] if load == "idle" else [mp.Process(target=_spin, args=(stop,)) for _ in range(os.cpu_count())]
        for p in spinners:
            p.start()
        default_us = _us_per_call(actor, obs, args.calls)
        with threadpool_limits(limits=1):
            one_us = _us_per_call(actor, obs, args.calls)
        stop.set()
        for p in spinners:
            p.join()
        rows[load] = {"default_threads_us": default_us, "one_thread_us": one_us, "ratio": default_us / one_us}
        print(f"{load:<28} default {default_us:7.1f} us  one thread {one_us:7.1f} us  ({default_us / one_us:.2f}x)")
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    command = f"python benchmarks/blas_threads.py --calls {args.calls}"
    result = {"benchmark": "blas_threads", "command": command, "machine": machine_info(),
              "commit": git_commit(), "blas": blas, "batch": 16, "calls": args.calls, "rows": rows}
    m = result["machine"]
    lines = ["# Behaviour-policy inference: default BLAS threads vs one", "",
             f"Command: `{command}`  ", f"Machine: {m['cpu']} ({m['cores']} cores), BLAS {blas}  ",
             f"Commit: {result['commit']}; hopper expert actor, batch 16, {args.calls} calls per cell.", "",
             "| machine load | default threads | one thread | default / one |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['default_threads_us']:.1f} us | {r['one_thread_us']:.1f} us | {r['ratio']:.2f}x |"
              for k, r in rows.items()]
    write_result(Path(__file__).resolve().parent / "results", "blas_threads", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
