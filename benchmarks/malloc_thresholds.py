"""DT-size fp32 training updates, seqrl and Hugging Face, with glibc's default allocator thresholds or
raised ones (freed buffers kept in the process instead of returned to the kernel).

    python benchmarks/malloc_thresholds.py [--updates 150] [--pairs 3]

Each measurement is a fresh process (the thresholds must be set before the buffers exist): 3 warm-up
updates, then ``--updates`` timed ones, counting minor page faults. ``raised`` sets
``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` and ``mallopt(M_TRIM_THRESHOLD, 1 GiB)`` through ctypes. The
four processes (seqrl / HF x default / raised) alternate, ``--pairs`` times. Needs the ``bench``
extra (transformers). Writes benchmarks/results/malloc_thresholds.json; docs/training.md discusses it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _one(updates: int, allocator: str, impl: str) -> dict:
    import ctypes
    import resource
    import time

    if allocator == "raised":
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD
    import torch

    from seqrl.bench.train_bench import SIZES, _batches, _hf_step_fn, _seqrl_step_fn, _train_step

    size = SIZES["dt"]
    torch.manual_seed(0)
    model, forward = (_hf_step_fn if impl == "hf" else _seqrl_step_fn)(size, "cpu")
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    batches = _batches(8, size["batch_size"], "cpu", 0)
    for batch in batches[:3]:
        _train_step(model, forward, optimiser, batch, False, "cpu")
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for i in range(updates):
        _train_step(model, forward, optimiser, batches[i % 8], False, "cpu")
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"impl": impl, "allocator": allocator, "updates_per_s": updates / seconds,
            "faults_per_update": faults / updates, "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("ALLOCATOR", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.updates, *args.one)))
        return
    from seqrl.bench.machine import git_commit, machine_info

    rows = []
    for _ in range(args.pairs):
        for allocator in ("default", "raised"):
            for impl in ("seqrl", "hf"):
                out = subprocess.run([sys.executable, __file__, "--updates", str(args.updates), "--one",
                                      allocator, impl], capture_output=True, text=True, check=True)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    summary = {}
    for allocator in ("default", "raised"):
        rate = {impl: sum(r["updates_per_s"] for r in rows if r["impl"] == impl and r["allocator"] == allocator)
                / args.pairs for impl in ("seqrl", "hf")}
        summary[allocator] = {"seqrl_updates_per_s": rate["seqrl"], "hf_updates_per_s": rate["hf"],
                              "ratio": rate["seqrl"] / rate["hf"]}
    result = {"benchmark": "malloc_thresholds", "command": " ".join(["python"] + sys.argv),
              "commit": git_commit(), "machine": machine_info(), "updates": args.updates,
              "pairs": args.pairs, "rows": rows, "summary": summary}
    out = Path(__file__).parent / "results" / "malloc_thresholds.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
