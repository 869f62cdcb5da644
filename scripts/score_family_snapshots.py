"""Maintainer tool: score a task family's actor snapshots the way its datasets measure them.

    python scripts/score_family_snapshots.py --family ant-dir --steps 50000 0 100000 280000 700000

For each snapshot it makes the family's expert dataset in memory with that snapshot as the expert
(sampled actions, every task, ``--steps`` in all, seed 0, exactly as ``seqrl data make`` does) and prints
one JSON line: the mean episode return, the mean over tasks of each task's mean return (what the
meta-test weighs), the mean episode length and the seconds taken. The family's shipped manifest gives
everything else (the folder the actors come from, a wrapper such as ant-dir's turned Ant).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("snapshots", type=int, nargs="+", help="training steps of the snapshots")
    args = parser.parse_args()

    from seqrl.data.meta_recipes import generate_meta
    from seqrl.data.recipes import default_policy_root, load_manifest
    from seqrl.envs.tasks import get_family

    family = get_family(args.family)
    shipped = load_manifest(family.behaviour_family)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / family.behaviour_family
        folder.mkdir()
        source = shipped.get("actors_from") or family.behaviour_family
        if source != family.behaviour_family:
            (root / source).symlink_to(default_policy_root() / source)
        for step in args.snapshots:
            name = f"actor_{step:07d}.safetensors"
            if not shipped.get("actors_from"):
                (folder / name).symlink_to(Path(shipped["_root"]) / name)
            manifest = {k: v for k, v in shipped.items() if not k.startswith("_")}
            manifest.update(random=name, medium=name, expert=name, replay=[name])
            (folder / "manifest.json").write_text(json.dumps(manifest))
            start = time.perf_counter()
            data = generate_meta(f"{args.family}-expert", steps=args.steps, seed=args.seed,
                                 policy_root=root, progress=False)
            returns = np.add.reduceat(data.rewards, data.offsets[:-1])
            tasks = data.episode_tasks
            print(json.dumps({
                "step": step, "dataset_return_mean": round(float(returns.mean()), 1),
                "dataset_task_mean_return": round(float(np.mean([returns[tasks == t].mean()
                                                                 for t in np.unique(tasks)])), 1),
                "mean_episode_length": round(float(np.diff(data.offsets).mean()), 1),
                "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
