"""Maintainer tool: score a task family's actor snapshots the way its datasets measure them.

    python scripts/score_family_snapshots.py --family ant-dir --steps 50000 0 100000 280000 700000
    python scripts/score_family_snapshots.py --family walker-params --run behaviour_runs/walker-params \
        --steps 40000 0 20000 40000

For each snapshot it makes the family's expert dataset in memory with that snapshot as the expert
(sampled actions, every task, ``--steps`` in all, seed 0, exactly as ``seqrl data make`` does) and prints
one JSON line: the mean episode return, the mean over tasks of each task's mean return (what the
meta-test weighs), the mean episode length and the seconds taken. The snapshots come from the shipped
actors' folder, or with ``--run`` from a training run's folder (``scripts/train_behaviour.py --out``),
so that a run can be scored before anything of it ships. The family's shipped manifest, where there is
one, gives everything else (the folder the actors come from, a wrapper such as ant-dir's turned Ant).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, help="take the snapshots from this training run's folder")
    parser.add_argument("snapshots", type=int, nargs="+", help="training steps of the snapshots")
    args = parser.parse_args()

    from seqrl.data.meta_recipes import generate_meta
    from seqrl.data.recipes import default_policy_root, load_manifest
    from seqrl.data.sources import task_return_summary
    from seqrl.envs.tasks import get_family

    family = get_family(args.family)
    if args.run and not (default_policy_root() / family.behaviour_family / "manifest.json").is_file():
        shipped = {"env_id": family.gym_id}       # nothing shipped yet: the run's actors as they are
    else:
        shipped = load_manifest(family.behaviour_family)
    actors = args.run.resolve() if args.run else Path(shipped["_root"])
    missing = [s for s in args.snapshots if args.run and not (actors / f"actor_{s:07d}.safetensors").is_file()]
    if missing:
        parser.error(f"no snapshot of step(s) {missing} in {actors}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / family.behaviour_family
        folder.mkdir()
        source = shipped.get("actors_from") or family.behaviour_family
        if source != family.behaviour_family:
            (root / source).symlink_to(default_policy_root() / source)
        for step in args.snapshots:
            name = f"actor_{step:07d}.safetensors"
            if not (folder / name).exists() and (args.run or not shipped.get("actors_from")):
                (folder / name).symlink_to(actors / name)
            manifest = {k: v for k, v in shipped.items() if not k.startswith("_")
                        and not (args.run and k == "actors_from")}
            manifest.update(random=name, medium=name, expert=name, replay=[name])
            (folder / "manifest.json").write_text(json.dumps(manifest))
            start = time.perf_counter()
            data = generate_meta(f"{args.family}-expert", steps=args.steps, seed=args.seed,
                                 policy_root=root, progress=False)
            tasks = task_return_summary(data)
            print(json.dumps({
                "step": step, "dataset_return_mean": round(float(data.episode_returns.mean()), 1),
                "dataset_task_mean_return": round(tasks["task_mean_return"], 1),
                "mean_episode_length": round(tasks["mean_episode_length"], 1),
                "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
