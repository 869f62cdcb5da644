"""Maintainer tool: score actor snapshots of a behaviour run the way datasets measure them.

    python scripts/score_snapshots.py --env hopper --run behaviour_runs/hopper-sbx --steps 100000 \
        340000 440000 1000000

For each snapshot step it collects ``--steps`` environment steps with *sampled* actions in 16 copies
(exactly as ``seqrl data make`` does) and prints the episodes' mean return and D4RL-normalised return,
over every episode as ``seqrl data info`` counts them (the last, cut-off episode of each copy too), and
over the finished episodes alone (ended by a fall or the time limit): at 100k steps in 16 copies the 16
cut-off episodes are a seventh of a hopper's episodes and pull the first mean down; in a 1M-step
dataset they weigh ten times less. Ten evaluation episodes per snapshot in the run's log are too few to
choose medium and expert actors.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("snapshots", type=int, nargs="+", help="training steps of the snapshots")
    args = parser.parse_args()

    from seqrl.data.collect import collect
    from seqrl.data.sources import dataset_info, reference_for
    from seqrl.envs.registry import make_env
    from seqrl.envs.scores import normalized_score
    from seqrl.policies.actor import load_actor

    horizon = make_env(args.env).spec.max_episode_steps

    for step in args.snapshots:
        actor = load_actor(Path(args.run) / f"actor_{step:07d}.safetensors")
        rng = np.random.default_rng(args.seed)
        data = collect(args.env, lambda obs: actor.act(obs, rng), args.steps, num_envs=16, seed=args.seed)
        info = dataset_info(data)  # D4RL references of the env
        lengths = np.diff(data.offsets)
        last = data.offsets[1:] - 1
        finished = data.terminations[last] | (lengths >= horizon)
        ref = reference_for(data)
        print(json.dumps({"step": step, "episodes": info["episodes"],
                          "return_mean": round(info["return_mean"], 1),
                          "normalized_return_mean": round(info["normalized_return_mean"], 1),
                          "finished_episodes": int(finished.sum()),
                          "finished_normalized_mean": round(float(np.mean(normalized_score(
                              data.episode_returns[finished], *ref))), 1)}), flush=True)


if __name__ == "__main__":
    main()
