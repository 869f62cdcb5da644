"""Ant-Dir's turned Ant actor: the design choices of seqrl/policies/turned_ant.py, measured.

    python benchmarks/turned_ant.py [--directions 36] [--episodes 3]

Runs the shipped expert (policies/ant, 700k) in ant-dir with each direction of an even grid and
``--episodes`` episodes per direction (seeds 0, 1, ...; sampled actions), in four ways:
  * shipped: world turned by -theta, legs renamed by k = round(theta / 90 deg), contact forces as zeros;
  * true contact forces: the same, with Ant-v5's clipped contact forces (read from MuJoCo, renamed and
    turned like the rest) instead of zeros;
  * k from heading: k chosen at every step from the Ant's current heading instead of from theta;
  * not turned: the Ant actor on the plain observation (it walks along +x whatever the task).
Writes benchmarks/results/turned_ant.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np

from seqrl.bench.machine import git_commit, machine_info, write_result
from seqrl.data.recipes import load_manifest
from seqrl.envs.tasks import get_family
from seqrl.policies.actor import load_actor
from seqrl.policies.turned_ant import (CONTACT_DIMS, quarter_turns, turned_observation,
                                       unturned_action)


def contact_forces(env, direction: np.ndarray, k: int) -> np.ndarray:
    """Ant-v5's clipped contact forces (13 bodies x 6) with the legs renamed by k and turned by -theta."""
    forces = np.clip(env.unwrapped.data.cfrc_ext[1:], -1.0, 1.0).copy()    # torso, then 3 bodies a leg
    order = [0] + [1 + 3 * ((i + k) % 4) + j for i in range(4) for j in range(3)]
    forces = forces[order]
    theta = np.arctan2(direction[1], direction[0])
    c, s = np.cos(-theta), np.sin(-theta)
    turn = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    forces[:, :3], forces[:, 3:] = forces[:, :3] @ turn.T, forces[:, 3:] @ turn.T
    return forces.ravel()


def heading_turns(obs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Quarter turns that follow the Ant's current heading: round((theta - yaw) / 90 deg)."""
    w, x, y, z = obs[1:5]
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    theta = np.arctan2(direction[1], direction[0]) - yaw
    return quarter_turns(np.array([[np.cos(theta), np.sin(theta)]]))


def act(actor, variant: str, env, obs: np.ndarray, direction: np.ndarray, rng) -> np.ndarray:
    if variant == "not turned":
        return actor.act(np.concatenate([obs, np.zeros(CONTACT_DIMS)])[None], rng)[0]
    k = heading_turns(obs, direction) if variant == "k from heading" else None
    turned, k = turned_observation(obs[None].astype(np.float64), direction[None], k)
    if variant == "true contact forces":
        turned[0, 27:] = contact_forces(env, direction, int(k[0]))
    return unturned_action(actor.act(turned, rng), k)[0]


VARIANTS = ("shipped", "true contact forces", "k from heading", "not turned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directions", type=int, default=36)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    manifest = load_manifest("ant-dir")
    actor = load_actor(Path(manifest["_root"]).parent / manifest["actors_from"] / manifest["expert"])
    angles = np.linspace(0, 2 * np.pi, args.directions, endpoint=False)
    rows = []
    for variant in VARIANTS:
        rng = np.random.default_rng(0)
        returns, lengths = np.zeros((len(angles), args.episodes)), np.zeros((len(angles), args.episodes))
        for a, angle in enumerate(angles):
            direction = np.array([np.cos(angle), np.sin(angle)])
            env = gym.make(get_family("ant-dir").gym_id, angle=angle)
            for e in range(args.episodes):
                obs, _ = env.reset(seed=e)
                done = False
                while not done:
                    obs, reward, terminated, truncated, _ = env.step(act(actor, variant, env, obs,
                                                                         direction, rng))
                    returns[a, e] += reward
                    lengths[a, e] += 1
                    done = terminated or truncated
            env.close()
        per_direction = returns.mean(axis=1)
        rows.append({"variant": variant, "return_mean": float(returns.mean()),
                     "worst_direction_mean": float(per_direction.min()),
                     "early_ends": int((lengths < 200).sum()), "episodes": int(lengths.size),
                     "per_direction": [round(float(x), 1) for x in per_direction]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "turned_ant", "command": f"python benchmarks/turned_ant.py --directions "
              f"{args.directions} --episodes {args.episodes}", "commit": git_commit(),
              "machine": machine_info(), "actor": manifest["expert"], "rows": rows}
    lines = ["# Ant-Dir: the turned Ant expert, four ways", "",
             f"`{result['command']}` at commit `{result['commit']}`: {args.directions} directions x "
             f"{args.episodes} episodes of 200 steps, sampled actions.", "",
             "| variant | mean return | worst direction (mean) | episodes ended early |", "|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['return_mean']:.1f} | {r['worst_direction_mean']:.1f} | "
              f"{r['early_ends']} / {r['episodes']} |" for r in rows]
    write_result(args.out, "turned_ant", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
