"""Attention during CPU decoding: torch's SDPA against the plain three-op math, fp32 and bf16.

    python benchmarks/decode_attention.py [--calls 2000]

The shapes are those of a batched rollout at the DT paper's size (40 episodes, one 128-dim head): a
step feeds 3 new tokens (1 in the last layer) against 30-60 cached keys, and a re-encoding runs 30
tokens causally. seqrl decodes with SDPA in fp32 over an fp32 cache, also for bf16 policies
(``eval_precision=bf16``); this records the alternatives it measured. The plain math was no faster on the
incremental steps in fp32, and switching would change the rounding, and with it the evaluation
trajectories, of every checkpoint already scored. Writes benchmarks/results/decode_attention.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = ((3, 30), (3, 60), (1, 60), (30, 30))   # (queries, keys)


def _us(fn, calls: int) -> float:
    for _ in range(50):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def plain_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(d) masked) v in three plain ops."""
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    from seqrl.bench.machine import git_commit, machine_info, write_result

    torch.set_num_threads(1)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for tq, tk in SHAPES:
            gen = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(40, 1, t, 128, generator=gen).to(dtype) for t in (tq, tk, tk))
            mask = torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)   # query j sees keys up to its own
            sdpa = _us(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), args.calls)
            plain = _us(lambda: plain_attention(q, k, v, mask), args.calls)
            ref = (q.float() @ k.float().transpose(-1, -2) / math.sqrt(128)).masked_fill(~mask, -math.inf)
            err = (plain_attention(q, k, v, mask).float() - ref.softmax(-1) @ v.float()).abs().max()
            rows.append({"dtype": str(dtype).removeprefix("torch."), "queries": tq, "keys": tk,
                         "sdpa_us": sdpa, "plain_us": plain, "sdpa_over_plain": sdpa / plain,
                         "plain_max_error_vs_fp32": float(err)})
            print(f"{rows[-1]['dtype']:>8} q={tq:<2} k={tk:<2} SDPA {sdpa:7.1f} us  plain {plain:7.1f} us "
                  f"({sdpa / plain:.2f}x)")
    command = f"python benchmarks/decode_attention.py --calls {args.calls}"
    result = {"benchmark": "decode_attention", "command": command, "machine": machine_info(),
              "commit": git_commit(), "torch_threads": 1, "batch": 40, "head_dim": 128, "rows": rows}
    m = result["machine"]
    lines = ["# Attention while decoding on the CPU: SDPA vs plain math", "",
             f"Command: `{command}`  ", f"Machine: {m['cpu']} ({m['cores_allowed']} cores allowed), torch 1 thread  ",
             f"Commit: {result['commit']}; batch 40, one head of 128 dims, {args.calls} calls per cell.", "",
             "| dtype | queries | keys | SDPA | plain | SDPA / plain |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['queries']} | {r['keys']} | {r['sdpa_us']:.1f} us | {r['plain_us']:.1f} us "
              f"| {r['sdpa_over_plain']:.2f}x |" for r in rows]
    write_result(Path(__file__).resolve().parent / "results", "decode_attention", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
