"""Maintainer tool: copy chosen actor snapshots of training runs into the package, with a manifest.

    python scripts/ship_behaviour.py --env ant --run behaviour_runs/ant --medium-step 200000 \
        --expert-step 1000000
    python scripts/ship_behaviour.py --env hopper --expert-run behaviour_runs/hopper-sbx \
        --expert-step 1000000
    python scripts/ship_behaviour.py --family point-robot --run behaviour_runs/point-robot \
        --medium-step 2000 --expert-step 30000

With --run, the package's actors of that environment are replaced: the random actor is the run's
initial actor (its step-0 snapshot; runs from before step-0 snapshots existed were stable-baselines3 ones,
whose initial actor is re-created from the same seed), the replay series is every snapshot from the
initial actor up to and including the medium one, and the expert (optional) comes from the same run.
With --expert-run alone, only the expert is replaced, by a snapshot of another run: the shipped
random, medium and replay actors and their manifest entries stay as they are.

With --family and --per-task-runs DIR (one `train_behaviour.py --family F --task ID` run per task in
DIR/<task id>, every task of the family), the family's datasets come from per-task experts: each task's
medium and expert snapshots ship as per_task/<id>_medium and per_task/<id>_expert, one random actor (the
first task's step-0 snapshot) serves every task, and the manifest's "per_task" entry lists them. The
privileged actors and their entries stay (benchmarks/meta_task_sensitivity.py reads them).

    python scripts/ship_behaviour.py --family hopper-params --per-task-runs behaviour_runs/hopper-params-per-task \
        --medium-step 5000 --expert-step 40000
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def read_log(run: Path) -> dict[int, dict]:
    return {row["step"]: row for row in map(json.loads, (run / "log.jsonl").read_text().splitlines())}


def trainer_of(run: Path) -> str:
    from train_behaviour import TRAINERS, previous_trainer

    return TRAINERS[previous_trainer(run)]


def train_command(flag: str, run: Path, log: dict, seed: int) -> str:
    from train_behaviour import previous_trainer

    every = min(s for s in log if s > 0)
    return (f"python scripts/train_behaviour.py {flag} --trainer {previous_trainer(run)} --seed {seed} "
            f"--snapshot-every {every} --steps {max(log)} --out {run}")


def evaluation(log: dict, steps) -> dict:
    return {f"actor_{s:07d}.safetensors": {"return_mean": round(log[s]["return_mean"], 1),
                                           "return_std": round(log[s]["return_std"], 1)}
            for s in sorted(steps) if s in log}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env", help="single-task environment (hopper, ...)")
    which.add_argument("--family", help="meta-RL task family (cheetah-vel, point-robot, ...)")
    parser.add_argument("--run", help="the run of the random, medium and replay actors")
    parser.add_argument("--medium-step", type=int)
    parser.add_argument("--expert-run", help="take the expert from this run instead of --run")
    parser.add_argument("--expert-step", type=int, default=None)
    parser.add_argument("--per-task-runs", help="with --family: folder of per-task runs (one per task id)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.per_task_runs:
        if not (args.family and args.medium_step is not None and args.expert_step is not None):
            parser.error("--per-task-runs needs --family, --medium-step and --expert-step")
        ship_per_task(args.family, Path(args.per_task_runs), args.medium_step, args.expert_step)
        return
    if args.run and args.medium_step is None:
        parser.error("--run needs --medium-step")
    if not args.run and not (args.expert_run and args.expert_step is not None):
        parser.error("give --run and --medium-step, or --expert-run and --expert-step")

    from seqrl.envs.registry import gym_id, make_env

    if args.family:
        from seqrl.envs.tasks import PrivilegedTasks, get_family

        family = get_family(args.family)
        name, env_id = args.family, family.gym_id
        flag = f"--family {args.family}"

        def make():
            return PrivilegedTasks(family, seed=args.seed)
    else:
        name, env_id = args.env, gym_id(args.env)
        flag = f"--env {args.env}"

        def make():
            return make_env(args.env)
    dest = Path(__file__).resolve().parent.parent / "src" / "seqrl" / "policies" / name
    dest.mkdir(parents=True, exist_ok=True)

    if args.run:
        run = Path(args.run)
        log = read_log(run)
        for old in dest.glob("*.safetensors"):
            old.unlink()
        initial = "actor_0000000.safetensors"
        if (run / initial).exists():
            shutil.copy2(run / initial, dest / initial)
        else:
            from stable_baselines3 import SAC

            from seqrl.policies.actor import save_sb3_actor

            save_sb3_actor(SAC("MlpPolicy", make(), seed=args.seed, device="cpu"), dest / initial, env_id,
                           {"train_step": 0})
        replay = [initial]
        for step in sorted(s for s in log if 0 < s <= args.medium_step):
            file = f"actor_{step:07d}.safetensors"
            shutil.copy2(run / file, dest / file)
            replay.append(file)
        manifest = {
            "env_id": env_id,
            "trainer": trainer_of(run),
            "train_command": train_command(flag, run, log, args.seed),
            "random": initial,
            "medium": f"actor_{args.medium_step:07d}.safetensors",
            "medium_train_step": args.medium_step,
            "expert": None,
            "expert_train_step": None,
            "replay": replay,
            "snapshot_eval": evaluation(log, (s for s in log if s <= args.medium_step)),
        }
    else:
        manifest = json.loads((dest / "manifest.json").read_text())
        if manifest.get("expert") and manifest["expert"] not in manifest["replay"]:
            (dest / manifest["expert"]).unlink(missing_ok=True)
    if args.expert_step is not None:
        expert_run = Path(args.expert_run or args.run)
        expert_log = read_log(expert_run)
        file = f"actor_{args.expert_step:07d}.safetensors"
        if args.expert_run:
            # another run's snapshot could share a file name with a replay actor: keep both apart
            file = f"expert_{args.expert_step:07d}.safetensors"
        shutil.copy2(expert_run / f"actor_{args.expert_step:07d}.safetensors", dest / file)
        manifest.update(expert=file, expert_train_step=args.expert_step)
        manifest["snapshot_eval"].update({file: evaluation(expert_log, [args.expert_step]).popitem()[1]})
        if args.expert_run:
            manifest.update(expert_trainer=trainer_of(expert_run),
                            expert_train_command=train_command(flag, expert_run, expert_log, args.seed))
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"shipped {len(list(dest.glob('*.safetensors')))} actors to {dest}")


def ship_per_task(family_name: str, runs: Path, medium_step: int, expert_step: int) -> None:
    from seqrl.envs.tasks import get_family

    family = get_family(family_name)
    dest = Path(__file__).resolve().parent.parent / "src" / "seqrl" / "policies" / family_name
    manifest = json.loads((dest / "manifest.json").read_text())
    folder = dest / "per_task"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tasks = list(range(len(family.tasks)))
    missing = [t for t in tasks if not (runs / str(t) / f"actor_{expert_step:07d}.safetensors").is_file()]
    if missing:
        raise SystemExit(f"error: no snapshot at step {expert_step} for tasks {missing} in {runs}")
    random = "per_task/random.safetensors"
    shutil.copy2(runs / str(tasks[0]) / "actor_0000000.safetensors", dest / random)
    entries = {}
    for t in tasks:
        log = read_log(runs / str(t))
        entry = {"random": random}
        for level, step in (("medium", medium_step), ("expert", expert_step)):
            file = f"per_task/{t}_{level}.safetensors"
            shutil.copy2(runs / str(t) / f"actor_{step:07d}.safetensors", dest / file)
            entry[level] = file
            entry[f"{level}_eval"] = evaluation(log, [step]).popitem()[1]
        entry["replay"] = [random, entry["medium"]]
        entries[str(t)] = entry
    from seqrl.policies.actor import load_actor

    first = runs / str(tasks[0])
    arch = " ".join(str(w.shape[0]) for w, _ in load_actor(dest / entries[str(tasks[0])]["expert"]).hidden)
    command = train_command(f"--family {family_name} --task ID --net-arch {arch}", first, read_log(first), 0)
    manifest["per_task"] = entries
    manifest["per_task_train_command"] = command.replace(str(first), f"{runs}/ID")
    manifest["per_task_medium_step"], manifest["per_task_expert_step"] = medium_step, expert_step
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"shipped per-task actors of {len(tasks)} tasks to {folder} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
