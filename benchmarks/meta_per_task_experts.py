"""Would per-task experts make a family's data depend on the task? Cross-evaluate them.

    python scripts/train_behaviour.py --family hopper-params --task 33 --steps 60000 --out behaviour_runs/hp-task/33
    ... (one run per task)
    python benchmarks/meta_per_task_experts.py hopper-params --runs behaviour_runs/hopper-params-per-task \
        --step 40000 --tasks 30 31 32 33 34 35 36 37 38 39

Prompt-DT's and FOCAL's params data come from one SAC expert per task, where this project's shipped
behaviour policy is one privileged expert for the whole family (``scripts/train_behaviour.py
--family``). On hopper-params and walker-params the privileged expert fails the check of
``meta_task_sensitivity.py``. This script asks the same question of per-task experts: every expert in
``--runs`` (``RUNS/<task id>/actor_<step>.safetensors``, trained with ``--task``) acts in every task of
the set (sampled actions, as ``seqrl data make`` does), the same episode seeds for every expert in a
task. Reported per task: its own expert's return, the mean over the other tasks' experts, the random
(step-0) snapshot, and whether its own expert is the best of all; for the set, the share of the own
expert's gain over random that another task's expert loses, (own - other) / (own - random), as in
``meta_task_sensitivity.py``: 0 when any expert does as well, 1 when a wrong one is as bad as random.
For comparison the family's shipped privileged expert runs on the same episodes with the true task
vector and with the training tasks' mean ("nominal").
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
_spec = importlib.util.spec_from_file_location("meta_task_sensitivity",
                                               Path(__file__).parent / "meta_task_sensitivity.py")
_sensitivity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sensitivity)
rollout_returns = _sensitivity.rollout_returns      # one episode per vector, seeds seed + i


def cross_evaluate(family, experts: dict[int, object], randoms: dict[int, object], episodes: int,
                   seed: int = 0, privileged=None) -> dict:
    """``experts`` / ``randoms``: task id -> actor on plain observations. ``privileged``: an actor on
    observation + task vector, or None. Returns the matrix (row: task, column: expert) and summaries."""
    tasks = sorted(experts)
    none = [np.zeros(0, np.float32)] * episodes
    if privileged is not None:
        nominal = np.stack([family.task_vector(t) for t in family.train_ids]).mean(axis=0)
    start = time.perf_counter()
    rows = []
    for task in tasks:
        episode_seed = seed * 1000 + task * 10
        returns = {j: float(np.mean(rollout_returns(family, task, experts[j], none, episode_seed)))
                   for j in tasks}
        row = {"task": task, "returns_by_expert": {str(j): r for j, r in returns.items()},
               "own": returns[task], "other": float(np.mean([r for j, r in returns.items() if j != task])),
               "random": float(np.mean(rollout_returns(family, task, randoms[task], none, episode_seed))),
               "own_is_best": bool(returns[task] >= max(returns.values()))}
        if privileged is not None:
            for name, vector in (("privileged_true", family.task_vector(task)), ("privileged_nominal", nominal)):
                row[name] = float(np.mean(rollout_returns(family, task, privileged, [vector] * episodes,
                                                          episode_seed)))
        rows.append(row)
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]
            if key in ("own", "other", "random", "privileged_true", "privileged_nominal")}
    gain = mean["own"] - mean["random"]
    return {"tasks": tasks, "episodes": episodes, "mean": mean,
            "gain_lost_by_other": (mean["own"] - mean["other"]) / gain if gain else None,
            "own_is_best": sum(r["own_is_best"] for r in rows),
            "seconds": round(time.perf_counter() - start, 1), "per_task": rows}


def main() -> None:
    from seqrl.bench.machine import git_commit, machine_info, write_result
    from seqrl.data.meta_recipes import behaviour_actor
    from seqrl.data.recipes import load_manifest
    from seqrl.envs.tasks import get_family
    from seqrl.policies.actor import load_actor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--runs", required=True, help="folder with one train_behaviour.py --task run per task")
    parser.add_argument("--step", type=int, required=True, help="the snapshot (train step) to evaluate")
    parser.add_argument("--tasks", type=int, nargs="+", default=None,
                        help="cross-evaluate only these task ids (default: every run in --runs)")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task and expert")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="results name (default meta-per-task-experts-FAMILY)")
    args = parser.parse_args()

    family = get_family(args.family)
    runs = sorted((p for p in Path(args.runs).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    experts, randoms = {}, {}
    if args.tasks is not None:
        runs = [run for run in runs if int(run.name) in set(args.tasks)]
    for run in runs:
        snapshot = run / f"actor_{args.step:07d}.safetensors"
        if snapshot.is_file():
            experts[int(run.name)] = load_actor(snapshot)
            randoms[int(run.name)] = load_actor(run / "actor_0000000.safetensors")
    if len(experts) < 2:
        raise SystemExit(f"error: fewer than two runs in {args.runs} have a snapshot at step {args.step}")
    manifest = load_manifest(family.behaviour_family)
    result = cross_evaluate(family, experts, randoms, args.episodes, args.seed,
                            privileged=behaviour_actor(manifest, manifest["expert"]))
    commit = git_commit()
    command = "python benchmarks/meta_per_task_experts.py " + " ".join(sys.argv[1:])
    record = {"command": command, "commit": commit, "machine": machine_info(),
              "family": args.family, "step": args.step, "privileged_expert": manifest["expert"], **result}
    m = result["mean"]
    lines = [f"# Per-task experts on {args.family}, cross-evaluated", "",
             f"`{command}` at commit `{commit}`: each task's SAC expert (snapshot {args.step}) and every "
             f"other task's, sampled actions, {args.episodes} episodes each, the same seeds for every "
             f"expert in a task; the shipped privileged expert ({manifest['expert']}) on the same episodes.", "",
             "| task | own expert | other tasks' experts (mean) | own is best | random | privileged, true vector "
             "| privileged, nominal |", "|---|---|---|---|---|---|---|"]
    for r in result["per_task"]:
        lines.append(f"| {r['task']} | {r['own']:.1f} | {r['other']:.1f} | {'yes' if r['own_is_best'] else 'no'} "
                     f"| {r['random']:.1f} | {r['privileged_true']:.1f} | {r['privileged_nominal']:.1f} |")
    lines.append(f"| mean | {m['own']:.1f} | {m['other']:.1f} | {result['own_is_best']} of {len(result['tasks'])} "
                 f"| {m['random']:.1f} | {m['privileged_true']:.1f} | {m['privileged_nominal']:.1f} |")
    lines += ["", f"Gain over random lost with another task's expert: {result['gain_lost_by_other']:.2f}."]
    write_result(RESULTS, args.name or f"meta-per-task-experts-{args.family}", record, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
