"""Maintainer tool: copy chosen actor snapshots of a training run into the package, with a manifest.

    python scripts/ship_behaviour.py --env hopper --run behaviour_runs/hopper --medium-step 80000 \
        [--expert-step 1000000] [--seed 0]
    python scripts/ship_behaviour.py --family point-robot --run behaviour_runs/point-robot \
        --medium-step 2000 --expert-step 30000

The random actor is the run's initial actor (re-created from the same seed: stable-baselines3 seeds its
initialisation, so SAC(seed=s) starts from the same weights as the run did). The replay series is every
snapshot from the initial actor up to and including the medium one.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env", help="single-task environment (hopper, ...)")
    which.add_argument("--family", help="meta-RL task family (cheetah-vel, point-robot, ...)")
    parser.add_argument("--run", required=True)
    parser.add_argument("--medium-step", type=int, required=True)
    parser.add_argument("--expert-step", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from stable_baselines3 import SAC

    from seqrl.envs.registry import gym_id, make_env
    from seqrl.policies.actor import save_sb3_actor

    if args.family:
        from seqrl.envs.tasks import PrivilegedTasks, get_family

        family = get_family(args.family)
        name, env_id, env = args.family, family.gym_id, PrivilegedTasks(family, seed=args.seed)
        flag = f"--family {args.family}"
    else:
        name, env_id, env = args.env, gym_id(args.env), make_env(args.env)
        flag = f"--env {args.env}"
    run = Path(args.run)
    log = {row["step"]: row for row in map(json.loads, (run / "log.jsonl").read_text().splitlines())}
    dest = Path(__file__).resolve().parent.parent / "src" / "seqrl" / "policies" / name
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("actor_*.safetensors"):
        old.unlink()
    initial = SAC("MlpPolicy", env, seed=args.seed, device="cpu")
    save_sb3_actor(initial, dest / "actor_0000000.safetensors", env_id, {"train_step": 0})
    replay = ["actor_0000000.safetensors"]
    for step in sorted(s for s in log if s <= args.medium_step):
        name = f"actor_{step:07d}.safetensors"
        shutil.copy2(run / name, dest / name)
        replay.append(name)
    manifest = {
        "env_id": env_id,
        "trainer": "stable-baselines3 SAC, default hyperparameters (256x256, batch 256, lr 3e-4)",
        "train_command": f"python scripts/train_behaviour.py {flag} --seed {args.seed} "
                         f"--snapshot-every {min(log)} --out {args.run}",
        "random": "actor_0000000.safetensors",
        "medium": f"actor_{args.medium_step:07d}.safetensors",
        "medium_train_step": args.medium_step,
        "expert": None,
        "expert_train_step": None,
        "replay": replay,
        "snapshot_eval": {f"actor_{s:07d}.safetensors": {"return_mean": round(r["return_mean"], 1),
                                                         "return_std": round(r["return_std"], 1)}
                          for s, r in sorted(log.items()) if s <= max(args.medium_step, args.expert_step or 0)},
    }
    if args.expert_step is not None:
        name = f"actor_{args.expert_step:07d}.safetensors"
        shutil.copy2(run / name, dest / name)
        manifest.update(expert=name, expert_train_step=args.expert_step)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"shipped {len(list(dest.glob('actor_*.safetensors')))} actors to {dest}")


if __name__ == "__main__":
    main()
