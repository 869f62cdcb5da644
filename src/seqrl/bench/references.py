"""Measure reference returns in our v5 environments, to document beside D4RL's (v2) values.

Random: uniform random actions, ``episodes`` episodes per environment. Expert: the shipped expert actor
(sampled actions), where one ships. Normalised scores keep D4RL's values for comparability with the
papers' tables; this table says how far our environments' own references are from them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from seqrl.bench.machine import git_commit, machine_info


def episode_returns(env: str, policy, episodes: int, seed: int, num_envs: int = 10) -> np.ndarray:
    """Returns of the first ``episodes`` complete episodes run with ``policy`` (batched)."""
    from seqrl.data.collect import collect

    returns = np.zeros(0)
    budget = episodes * 50
    while len(returns) < episodes:  # collect more until enough episodes finished
        budget *= 2
        data = collect(env, policy, budget, num_envs=num_envs, seed=seed)
        # keep episodes that ended on their own (a fall, or the 1000-step limit), not those cut by
        # the step budget
        ended = data.episode_terminated | (data.episode_lengths >= 1000)
        returns = data.episode_returns[ended]
    return returns[:episodes]


def run_references(episodes: int = 100, seed: int = 0, out_dir: str | None = "benchmarks/results",
                   command: str = "seqrl bench references") -> dict:
    from seqrl.data.collect import random_policy
    from seqrl.data.recipes import load_manifest
    from seqrl.envs.registry import ENVIRONMENTS
    from seqrl.envs.scores import D4RL_REFERENCE_RETURNS
    from seqrl.errors import SeqrlError
    from seqrl.policies.actor import load_actor

    rows = {}
    t0 = time.perf_counter()
    for name in ENVIRONMENTS:
        rand = episode_returns(name, random_policy(name, seed), episodes, seed)
        row = {"random_return_mean": float(rand.mean()), "random_return_std": float(rand.std()),
               "random_episodes": int(len(rand)),
               "d4rl_random": D4RL_REFERENCE_RETURNS[name][0], "d4rl_expert": D4RL_REFERENCE_RETURNS[name][1],
               "expert_return_mean": None, "expert_return_std": None}
        try:
            manifest = load_manifest(name)
            actor = load_actor(Path(manifest["_root"]) / manifest["expert"])
            rng = np.random.default_rng(seed)
            exp = episode_returns(name, lambda o: actor.act(o, rng), min(episodes, 20), seed)
            row.update(expert_return_mean=float(exp.mean()), expert_return_std=float(exp.std()),
                       expert_episodes=int(len(exp)))
        except SeqrlError:
            pass
        rows[name] = row
        print(f"{name:<12} random {row['random_return_mean']:9.1f} +- {row['random_return_std']:6.1f}   "
              f"D4RL random {row['d4rl_random']:9.1f}   expert "
              f"{'n/a' if row['expert_return_mean'] is None else round(row['expert_return_mean'], 1)}")
    result = {"benchmark": "references", "command": command, "machine": machine_info(),
              "commit": git_commit(), "seed": seed, "budget": {"episodes": episodes},
              "seconds": time.perf_counter() - t0, "environments": rows}
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "references.json").write_text(json.dumps(result, indent=2) + "\n")
        lines = ["# Reference returns: our v5 environments beside D4RL's v2 values", "",
                 f"Command: `{command}`  ", f"Machine: {result['machine']['cpu']}  ",
                 f"Commit: {result['commit']}  ",
                 f"Seed {seed}; random = uniform random actions, {episodes} episodes per environment; "
                 f"expert = the shipped expert actor with sampled actions.", "",
                 "| env | random (ours, v5) | D4RL random (v2) | expert (ours, v5) | D4RL expert (v2) |",
                 "|---|---|---|---|---|"]
        for name, r in rows.items():
            expert = ("not shipped yet" if r["expert_return_mean"] is None
                      else f"{r['expert_return_mean']:.1f} +- {r['expert_return_std']:.1f}")
            lines.append(f"| {name} | {r['random_return_mean']:.1f} +- {r['random_return_std']:.1f} | "
                         f"{r['d4rl_random']} | {expert} | {r['d4rl_expert']} |")
        (out / "references.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out / 'references.json'} and {out / 'references.md'}")
    return result
