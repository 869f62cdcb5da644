"""Multi-task datasets for offline meta-RL, generated from privileged or per-task behaviour policies.

A family's behaviour policy (``seqrl/policies/<family>/``, trained once per family with
``scripts/train_behaviour.py --family``; ant-dir's are the single-task Ant actors in a frame turned to
the task's direction, ``policies/turned_ant.py``) sees the task vector after the observation; the datasets hold
only the observation (the task stays hidden) and record each episode's task id. A manifest with
``per_task`` names one set of actors per task instead (per-task SAC experts on plain observations,
``scripts/train_behaviour.py --family F --task ID``, as Prompt-DT's and FOCAL's data). Every task of the
family, training and held-out, gets the same number of steps; training code keeps the held-out tasks'
episodes out of training and out of the normalisation statistics (they serve as few-shot context only).

Names (``seqrl data make NAME``), stored as the Minari dataset ``seqrl/<family>/<level>-v0``:

  <family>           "mixed": the policy's training snapshots from random to expert in equal shares,
                     per task (like a replay buffer; FOCAL's data are per-task SAC replay buffers)
  <family>-random    the initial policy
  <family>-medium    the medium snapshot
  <family>-expert    the final policy

Default sizes: 10,000 steps per task and dataset for the MuJoCo families (50 episodes of 200 steps),
2,000 for the point-robot families (100 episodes of 20 steps); ``--steps`` sets the total, rounded
down to whole episodes per task.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from seqrl.envs.tasks import FAMILIES
from seqrl.errors import ConfigError, DatasetError

META_LEVELS = ("mixed", "random", "medium", "expert")
# A family's datasets get a new version when its behaviour policies change, so that data made before
# (kept under the old Minari id) are never taken for the new ones. hopper-params v1: per-task experts
# (v0: the privileged expert).
FAMILY_DATASET_VERSIONS = {"hopper-params": 1}


FAMILY_NAMES = tuple(FAMILIES)
META_DATASET_NAMES = tuple(name for f in FAMILY_NAMES
                           for name in (f, f"{f}-random", f"{f}-medium", f"{f}-expert"))


def split_meta_name(name: str) -> tuple[str, str] | None:
    """(family, level) for a meta-RL dataset name, None for any other name."""
    if name in FAMILY_NAMES:
        return name, "mixed"
    family, _, level = name.rpartition("-")
    if family in FAMILY_NAMES and level in META_LEVELS[1:]:
        return family, level
    return None


def steps_per_task(family_name: str) -> int:
    return 2_000 if family_name.startswith("point-robot") else 10_000


def level_policies(manifest: dict, family: str, level: str) -> list[str]:
    """The actor files a level is made of (several, in equal shares, for "mixed")."""
    if level == "mixed":
        files = list(manifest.get("replay") or [])
        if manifest.get("expert") and manifest["expert"] not in files:
            files.append(manifest["expert"])
        if not files:
            raise DatasetError(f"no behaviour snapshots ship for '{family}'")
        return files
    if not manifest.get(level):
        raise DatasetError(f"no {level} behaviour policy ships for '{family}' yet (see docs/meta.md)")
    return [manifest[level]]


def behaviour_actor(manifest: dict, file: str):
    """Load one actor a family manifest names. A manifest with ``actors_from`` borrows the actors of
    another folder (e.g. ant-dir those of the single-task Ant) and ``wrapper`` says how they act in the
    family: ``turned-ant`` acts in a frame turned to the task's direction (``policies/turned_ant.py``)."""
    from seqrl.policies.actor import load_actor

    root = Path(manifest["_root"])
    if manifest.get("actors_from"):
        root = root.parent / manifest["actors_from"]
    actor = load_actor(root / file)
    wrapper = manifest.get("wrapper")
    if wrapper is None:
        return actor
    if wrapper == "turned-ant":
        from seqrl.policies.turned_ant import TurnedAntActor

        return TurnedAntActor(actor)
    raise DatasetError(f"unknown behaviour wrapper '{wrapper}' in {root}/manifest.json")


def copies(steps: int, episode_steps: int, most: int) -> int:
    """Environment copies for a block: the largest count up to ``most`` that divides the block's whole
    episodes, so that (without early terminations) no episode is cut at the end of the budget."""
    episodes = max(1, steps // episode_steps)
    return max(d for d in range(1, most + 1) if episodes % d == 0)


def generate_meta(name: str, steps: int | None = None, seed: int = 0, num_envs: int = 16,
                  policy_root: Path | None = None, progress: bool = True):
    """Build a meta-RL dataset in memory; ``episode_tasks`` holds each episode's task id."""
    from tqdm import tqdm

    from seqrl.data.collect import collect
    from seqrl.data.recipes import content_hash, load_manifest
    from seqrl.data.trajectories import TrajectoryDataset

    family_name, level = split_meta_name(name)
    family = FAMILIES[family_name]
    manifest = load_manifest(family.behaviour_family, policy_root)
    task_ids = list(range(len(family.tasks)))
    # Per-task experts (manifest "per_task": task id -> that task's levels, plain observations) or
    # one privileged policy for every task (it reads the task vector after the observation).
    per_task_behaviour = manifest.get("per_task")
    if per_task_behaviour is not None:
        missing = [t for t in task_ids if str(t) not in per_task_behaviour]
        if missing:
            raise DatasetError(f"the per-task behaviour of '{family_name}' lacks tasks {missing}")
        files_of = {t: level_policies(per_task_behaviour[str(t)], family.behaviour_family, level)
                    for t in task_ids}
    else:
        files = level_policies(manifest, family.behaviour_family, level)
        files_of = {t: files for t in task_ids}
    # Budgets in whole episodes (of the time limit's length) per task, split evenly over the snapshots.
    per_task = steps_per_task(family_name) if steps is None else steps // len(task_ids)
    episodes = per_task // family.episode_steps
    most = max(len(f) for f in files_of.values())
    if episodes < most:
        raise ConfigError(f"{name} needs at least {most * len(task_ids) * family.episode_steps} "
                          f"steps (one {family.episode_steps}-step episode per task and snapshot), "
                          f"got {steps}")
    loaded = {}

    def actor_of(file):
        if file not in loaded:
            loaded[file] = behaviour_actor(manifest, file)
        return loaded[file]

    blocks, used = [], []
    with tqdm(total=per_task * len(task_ids), unit="step", desc=f"making {name}", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for task in task_ids:
            files = files_of[task]
            shares = np.full(len(files), episodes // len(files))
            shares[: episodes % len(files)] += 1
            shares *= family.episode_steps
            vector = family.task_vector(task) if per_task_behaviour is None else np.zeros(0, np.float32)
            for index, (file, share) in enumerate(zip(files, shares)):
                actor = actor_of(file)
                used.append((task, file, int(share)))
                block_seed = seed * 1_000_003 + task * 10_007 + index * 101
                rng = np.random.default_rng(block_seed)

                def policy(obs, a=actor, r=rng, v=vector):
                    return a.act(np.concatenate([obs, np.broadcast_to(v, (len(obs), len(v)))],
                                                axis=1), r)

                block = collect(family.gym_id, policy, int(share), seed=block_seed,
                                num_envs=copies(int(share), family.episode_steps, num_envs),
                                progress=bar.update, name=f"{name}[task {task}]",
                                make=lambda t=task: family.make(t))
                block.episode_tasks = np.full(block.num_episodes, task)
                blocks.append(block)
    dataset = TrajectoryDataset.concatenate(blocks, name=name)
    dataset.metadata = {
        "seqrl_recipe": name, "seqrl_steps": int(dataset.num_steps), "seqrl_seed": seed,
        "seqrl_task_family": family_name, "seqrl_level": level,
        "seqrl_train_tasks": family.train_ids, "seqrl_test_tasks": family.test_ids,
        "seqrl_tasks": [family.kwargs(t) for t in task_ids],
        "seqrl_policies": ([{"file": f, "steps_per_task": n} for t, f, n in used if t == task_ids[0]]
                           if per_task_behaviour is None else
                           [{"task": t, "file": f, "steps": n} for t, f, n in used]),
        "seqrl_content_sha256": content_hash(dataset),
    }
    return dataset
