"""Time ``seqrl data make`` for one recipe at full size: wall clock and peak memory.

Target (issue 3): hopper-medium (1M steps) in <= 10 minutes on a 2-core CPU with <= 4 GB. The actor
used is whatever the policy root holds (the shipped one, or SEQRL_POLICY_ROOT); the result records which.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path

from seqrl.bench.machine import git_commit, machine_info


def run_make_bench(name: str = "hopper-medium", steps: int | None = None, seed: int = 0,
                   out_dir: str | None = "benchmarks/results", command: str = "seqrl bench make") -> dict:
    from seqrl.data.minari_io import load_minari
    from seqrl.data.recipes import default_policy_root, load_manifest, make
    from seqrl.data.sources import minari_id_for, split_name

    env, kind = split_name(name)
    manifest = load_manifest(env)
    previous = os.environ.get("MINARI_DATASETS_PATH")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINARI_DATASETS_PATH"] = tmp
        try:
            t0 = time.perf_counter()
            make(name, steps=steps, seed=seed)
            seconds = time.perf_counter() - t0
            data = load_minari(minari_id_for(name))
        finally:
            if previous is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    result = {
        "benchmark": "make", "command": command, "machine": machine_info(), "commit": git_commit(),
        "seed": seed, "budget": {"recipe": name, "steps": data.num_steps},
        "policy_root": str(default_policy_root()),
        "policies": data.metadata.get("seqrl_policies"),
        "policy_train_steps": {k: manifest.get(f"{k}_train_step") for k in ("medium", "expert")},
        "episodes": int(data.num_episodes), "seconds": seconds, "peak_rss_mb": peak_mb,
        "targets": {"seconds": 600, "peak_rss_mb": 4096},
        "meets_targets": {"seconds": seconds <= 600, "peak_rss_mb": peak_mb <= 4096},
    }
    print(f"{name}: {data.num_steps} steps, {data.num_episodes} episodes in {seconds:.0f} s, "
          f"peak RSS {peak_mb:.0f} MB (targets: 600 s, 4096 MB)")
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"make-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out / f'make-{name}.json'}")
    return result
