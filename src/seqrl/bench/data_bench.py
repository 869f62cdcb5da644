"""Data-layer benchmark: load time, memory and sampler throughput on a 1M-step D4RL-layout file.

Targets (issue 2): load <= 3 s, held in <= 1.5x the raw array bytes, >= 20,000 length-20 segments per
second on one core. The peer measured in the same run is a per-sample Python loop in the style of the
Decision Transformer reference code's ``get_batch`` (re-implemented here), so the ratio says what the
vectorised gather buys on this machine.
"""

from __future__ import annotations

import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from seqrl.bench.machine import git_commit, machine_info, write_result

TARGETS = {"load_seconds": 3.0, "memory_ratio": 1.5, "segments_per_second": 20_000}


def write_synthetic_d4rl(path: Path, steps: int, seed: int, obs_dim: int = 17, act_dim: int = 6) -> int:
    """A D4RL-layout file shaped like halfcheetah/walker2d data: episodes of 10..1000 steps, most
    ending in a timeout at 1000, some in a terminal. Returns the raw bytes of its arrays."""
    import h5py

    rng = np.random.default_rng(seed)
    terminals = np.zeros(steps, dtype=bool)
    timeouts = np.zeros(steps, dtype=bool)
    pos = 0
    while pos < steps:
        length = 1000 if rng.random() < 0.7 else int(rng.integers(10, 1000))
        end = min(pos + length, steps) - 1
        (timeouts if length == 1000 else terminals)[end] = True
        pos = end + 1
    arrays = {
        "observations": rng.standard_normal((steps, obs_dim), dtype=np.float32),
        "actions": rng.uniform(-1, 1, (steps, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(steps, dtype=np.float32),
        "terminals": terminals, "timeouts": timeouts,
        "next_observations": rng.standard_normal((steps, obs_dim), dtype=np.float32),
    }
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return sum(v.nbytes for v in arrays.values())


def reference_style_batch(dataset, rng, batch_size: int, K: int, mean, std, scale: float):
    """Per-sample loop as in the DT reference ``get_batch``: pick an episode by length, slice, pad."""
    lengths = dataset.episode_lengths
    p = lengths / lengths.sum()
    episodes = rng.choice(len(lengths), size=batch_size, p=p)
    obs_out, act_out, rtg_out, ts_out, mask_out = [], [], [], [], []
    for e in episodes:
        ep = dataset.episode(int(e))
        si = rng.integers(0, len(ep["rewards"]))
        s = ep["observations"][si:si + K]
        a = ep["actions"][si:si + K]
        r = ep["rewards"]
        rtg = np.cumsum(r[::-1])[::-1][si:si + K]  # recomputed per sample, as the reference does
        tlen = len(s)
        pad = K - tlen
        obs_out.append(np.concatenate([(s - mean) / std, np.zeros((pad, s.shape[1]))]))
        act_out.append(np.concatenate([a, np.zeros((pad, a.shape[1]))]))
        rtg_out.append(np.concatenate([rtg / scale, np.zeros(pad)]))
        ts_out.append(np.concatenate([np.arange(si, si + tlen), np.zeros(pad)]))
        mask_out.append(np.concatenate([np.ones(tlen), np.zeros(pad)]))
    return [np.stack(x) for x in (obs_out, act_out, rtg_out, ts_out, mask_out)]


def _drop_page_cache() -> bool:
    """Ask Linux to drop its page cache (root only) so the next read comes from disk."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _rate(fn, batch_size: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch_size / (time.perf_counter() - t0)


def run_data_bench(steps: int = 1_000_000, seed: int = 0, out_dir: str | None = "benchmarks/results",
                   seconds: float = 3.0, command: str = "seqrl bench data") -> dict:
    from seqrl.data.d4rl import load_d4rl
    from seqrl.data.sampler import SegmentSampler

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic-1m.hdf5"
        raw_bytes = write_synthetic_d4rl(path, steps, seed)
        cold = _drop_page_cache()
        t0 = time.perf_counter()
        dataset = load_d4rl(path)
        cold_load = time.perf_counter() - t0 if cold else None
        del dataset
        load_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            dataset = load_d4rl(path)
            load_times.append(time.perf_counter() - t0)
            del dataset
        tracemalloc.start()
        dataset = load_d4rl(path)
        sampler = SegmentSampler(dataset, context_len=20, batch_size=64, seed=seed)  # rtg, stats
        _ = dataset.episode_of_step
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    held = dataset.nbytes
    rates = {b: _rate(lambda b=b: sampler.sample(b), b, seconds) for b in (64, 256)}
    mean, std = sampler.obs_mean, sampler.obs_std
    rng = np.random.default_rng(seed)
    peer = _rate(lambda: reference_style_batch(dataset, rng, 64, 20, mean, std, 1000.0), 64, seconds)
    result = {
        "benchmark": "data",
        "command": command,
        "machine": machine_info(),
        "commit": git_commit(),
        "seed": seed,
        "budget": {"steps": steps, "seconds_per_rate": seconds, "context_len": 20},
        "file": {"steps": steps, "episodes": int(dataset.num_episodes), "obs_dim": 17, "act_dim": 6,
                 "raw_array_bytes": raw_bytes},
        "load_seconds_median": float(np.median(load_times)),
        "load_seconds_all": [round(t, 4) for t in load_times],
        "load_seconds_cold_cache": cold_load,
        "held_bytes": int(held),
        "memory_ratio": held / raw_bytes,
        "tracemalloc_current_bytes": int(current),
        "tracemalloc_peak_bytes": int(peak),
        "segments_per_second_b64": rates[64],
        "segments_per_second_b256": rates[256],
        "reference_style_segments_per_second_b64": peer,
        "speedup_vs_reference_style": rates[64] / peer,
        "targets": TARGETS,
        "meets_targets": {
            "load_seconds": float(np.median(load_times)) <= TARGETS["load_seconds"],
            "memory_ratio": held / raw_bytes <= TARGETS["memory_ratio"],
            "segments_per_second": rates[64] >= TARGETS["segments_per_second"],
        },
    }
    _print_table(result)
    if out_dir:
        write_result(out_dir, "data", result, _markdown(result))
        print(f"wrote {Path(out_dir) / 'data.json'} and {Path(out_dir) / 'data.md'}")
    return result


def _print_table(r: dict) -> None:
    print(f"file: {r['file']['steps']} steps, {r['file']['episodes']} episodes, "
          f"{r['file']['raw_array_bytes'] / 1e6:.1f} MB of arrays")
    print(f"load (median of 3)        {r['load_seconds_median']:.3f} s      target <= 3 s")
    if r["load_seconds_cold_cache"] is not None:
        print(f"load, page cache dropped  {r['load_seconds_cold_cache']:.3f} s")
    print(f"held / raw bytes          {r['memory_ratio']:.3f}        target <= 1.5")
    print(f"segments/s (B=64, K=20)   {r['segments_per_second_b64']:,.0f}   target >= 20,000")
    print(f"segments/s (B=256, K=20)  {r['segments_per_second_b256']:,.0f}")
    print(f"reference-style loop      {r['reference_style_segments_per_second_b64']:,.0f}   "
          f"(vectorised is {r['speedup_vs_reference_style']:.1f}x)")


def _fmt_seconds(value) -> str:
    return "not measured (needs root)" if value is None else f"{value:.3f} s"


def _markdown(r: dict) -> str:
    m = r["machine"]
    ok = r["meets_targets"]
    yes = {True: "yes", False: "NO"}
    return f"""# Data-layer benchmark

Command: `{r['command']}`  
Machine: {m['cpu']} ({m['cores']} cores, {m['cores_allowed']} allowed to this process), Python {m['python']}, numpy {m['numpy']}, h5py {m['h5py']}  
Commit: {r['commit']}  
Seed: {r['seed']}; file: {r['file']['steps']:,} steps, {r['file']['episodes']} episodes, obs 17, act 6, \
{r['file']['raw_array_bytes'] / 1e6:.1f} MB of arrays (with next_observations)

| measure | value | target | met |
|---|---|---|---|
| load time (median of 3, file in page cache) | {r['load_seconds_median']:.3f} s | <= 3 s | {yes[ok['load_seconds']]} |
| load time, page cache dropped first | {_fmt_seconds(r['load_seconds_cold_cache'])} | | |
| bytes held / raw array bytes (after returns-to-go, stats, episode index) | {r['memory_ratio']:.3f} | <= 1.5 | {yes[ok['memory_ratio']]} |
| segments/s, batch 64, K=20, one core | {r['segments_per_second_b64']:,.0f} | >= 20,000 | {yes[ok['segments_per_second']]} |
| segments/s, batch 256, K=20, one core | {r['segments_per_second_b256']:,.0f} | | |
| peer: per-sample loop in the DT reference style, batch 64 | {r['reference_style_segments_per_second_b64']:,.0f} | | |
| speed-up of the vectorised sampler over the peer (same run) | {r['speedup_vs_reference_style']:.1f}x | | |
"""
