"""Does a family's privileged expert act on its task vector? If not, its data cannot teach adaptation.

    python benchmarks/meta_task_sensitivity.py walker-params hopper-params cheetah-vel ant-dir

A family's datasets come from a behaviour policy that reads the true task vector after the
observation (``seqrl/data/meta_recipes.py``). An offline agent can only learn to adapt to the task if
that behaviour depends on the task: if the expert does as well in a task when it is told another
task's vector, the data show one behaviour for every task and a context has nothing to add.

For each held-out task of each family, the shipped expert acts (sampled actions, as ``seqrl data make``
does) with three task vectors:

* true: the task's own vector (what the expert datasets hold);
* nominal: the mean of the training tasks' vectors (for the params families: the unscaled physics);
* other: the vector of another training task, a different one for each episode;

and, as the floor, the family's random snapshot with the true vector. Every condition runs the same
episode seeds. Writes benchmarks/results/<name>.{json,md} (default meta-task-sensitivity): per family
the mean over held-out tasks of each condition's mean episode return, and the share of the expert's
gain over random that another task's vector loses, (true - other) / (true - random): 0 when the task
vector does not matter, 1 when a wrong one is as bad as random behaviour.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def rollout_returns(family, task: int, actor, vectors: list[np.ndarray], seed: int) -> list[float]:
    """One episode per vector in ``task``, the i-th acting with ``vectors[i]``, episode seeds seed + i."""
    returns = []
    for i, vector in enumerate(vectors):
        env = family.make(task)
        obs, _ = env.reset(seed=seed + i)
        rng = np.random.default_rng(seed + i)
        total, done = 0.0, False
        while not done:
            x = np.concatenate([obs, vector]).astype(np.float32)[None]
            obs, reward, terminated, truncated, _ = env.step(actor.act(x, rng)[0])
            total += float(reward)
            done = terminated or truncated
        env.close()
        returns.append(total)
    return returns


def measure(family_name: str, episodes: int, seed: int) -> dict:
    from seqrl.data.meta_recipes import behaviour_actor
    from seqrl.data.recipes import load_manifest
    from seqrl.envs.tasks import get_family

    family = get_family(family_name)
    manifest = load_manifest(family.behaviour_family)
    actor = behaviour_actor(manifest, manifest["expert"])
    random_actor = behaviour_actor(manifest, manifest["random"])
    train_vectors = np.stack([family.task_vector(t) for t in family.train_ids])
    nominal = train_vectors.mean(axis=0)
    rng = np.random.default_rng(seed)
    per_task = []
    start = time.perf_counter()
    for task in family.test_ids:
        true = family.task_vector(task)
        others = rng.choice(len(train_vectors), episodes, replace=len(train_vectors) < episodes)
        row = {"task": task, "task_kwargs": family.kwargs(task)}
        for name, who, vectors in (("true", actor, [true] * episodes),
                                   ("nominal", actor, [nominal] * episodes),
                                   ("other", actor, [train_vectors[o] for o in others]),
                                   ("random", random_actor, [true] * episodes)):
            returns = rollout_returns(family, task, who, vectors, seed * 1000 + task * 10)
            row[name] = {"returns": returns, "mean": float(np.mean(returns))}
        per_task.append(row)
    means = {c: float(np.mean([r[c]["mean"] for r in per_task]))
             for c in ("true", "nominal", "other", "random")}
    gain = means["true"] - means["random"]
    return {"family": family_name, "expert": manifest["expert"], "episodes_per_condition": episodes,
            "held_out_tasks": len(per_task), "mean": means,
            "gain_lost_by_other": (means["true"] - means["other"]) / gain if gain else None,
            "seconds": round(time.perf_counter() - start, 1), "per_task": per_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="+")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per held-out task and condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="meta-task-sensitivity")
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    results = []
    for name in args.families:
        result = measure(name, args.episodes, args.seed)
        print(f"{name}: true {result['mean']['true']:.1f}, nominal {result['mean']['nominal']:.1f}, "
              f"other {result['mean']['other']:.1f}, random {result['mean']['random']:.1f} "
              f"({result['seconds']} s)", file=sys.stderr)
        results.append(result)
    command = "python benchmarks/meta_task_sensitivity.py " + " ".join(sys.argv[1:])
    record = {"command": command, "commit": commit, "machine": platform.processor() or platform.machine(),
              "seed": args.seed, "families": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Does the privileged expert act on its task vector?", "",
             f"`{command}` at commit `{commit}`; expert actors as shipped, sampled actions, "
             f"{args.episodes} episodes per held-out task and condition, the same episode seeds in "
             "every condition.", "",
             "| family | expert | held-out tasks | true vector | nominal (training mean) | "
             "another training task's | random snapshot | gain lost by other |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["mean"]
        lines.append(f"| {r['family']} | {r['expert']} | {r['held_out_tasks']} | {m['true']:.1f} | "
                     f"{m['nominal']:.1f} | {m['other']:.1f} | {m['random']:.1f} | "
                     f"{r['gain_lost_by_other']:.2f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
