"""Turn what a user types as a dataset SOURCE into a TrajectoryDataset.

A SOURCE is one of:
  * a path to a D4RL-layout ``.hdf5``/``.h5`` file;
  * ``minari:<dataset id>``, a dataset in the local Minari root;
  * a seqrl dataset name such as ``hopper-medium``, stored as the Minari dataset
    ``seqrl/hopper/medium-v0``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from seqrl.data.trajectories import TrajectoryDataset
from seqrl.envs.registry import ENVIRONMENTS, env_name
from seqrl.envs.scores import D4RL_REFERENCE_RETURNS, normalized_score
from seqrl.errors import DatasetError, UnknownNameError

DATASET_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")
DATASET_NAMES = tuple(f"{env}-{kind}" for env in ENVIRONMENTS for kind in DATASET_KINDS)
MINARI_NAMESPACE = "seqrl"
DATASET_VERSION = 0


def minari_id_for(name: str) -> str:
    """Minari id of a seqrl dataset name: ``hopper-medium`` -> ``seqrl/hopper/medium-v0``,
    ``cheetah-vel`` -> ``seqrl/cheetah-vel/mixed-v0``, ``hopper-params`` -> ``seqrl/hopper-params/mixed-v1``."""
    from seqrl.data.meta_recipes import FAMILY_DATASET_VERSIONS, split_meta_name

    env, kind = split_meta_name(name) or split_name(name)
    return f"{MINARI_NAMESPACE}/{env}/{kind}-v{FAMILY_DATASET_VERSIONS.get(env, DATASET_VERSION)}"


def split_name(name: str) -> tuple[str, str]:
    env, _, kind = name.partition("-")
    if name not in DATASET_NAMES:
        raise UnknownNameError(
            f"unknown dataset '{name}': give a path to a .hdf5 file, minari:<dataset id>, or a seqrl "
            f"dataset name ({', '.join(f'{e}-<kind>' for e in ENVIRONMENTS)}; kinds: "
            f"{', '.join(DATASET_KINDS)}; or a meta-RL family such as cheetah-vel, see `seqrl data list`)")
    return env, kind


def looks_like_path(source: str) -> bool:
    return (source.endswith((".hdf5", ".h5")) or "/" in source or "\\" in source
            or Path(source).exists())


def load_source(source: str, env: str | None = None, make_missing: bool = False) -> TrajectoryDataset:
    """Load a dataset from a SOURCE string (see the module docstring).

    With ``make_missing`` a seqrl dataset name that has not been made yet is generated first (as
    ``seqrl data make NAME`` would); training commands use this.
    """
    from seqrl.data.d4rl import load_d4rl
    from seqrl.data.minari_io import load_minari, minari_dataset_exists

    if source.startswith("minari:"):
        dataset = load_minari(source[len("minari:"):])
    elif looks_like_path(source) and not source.startswith(f"{MINARI_NAMESPACE}/"):
        dataset = load_d4rl(source, env_id=None)
        if dataset.env_id is None:
            dataset.env_id = guess_env_from_filename(source)
            if dataset.env_id:
                dataset.metadata["env_from"] = "file name"
    else:
        minari_id = minari_id_for(source)
        if not minari_dataset_exists(minari_id) and make_missing:
            from seqrl.data.recipes import make

            print(f"dataset '{source}' is not made yet: making it now (once)", file=sys.stderr)
            make(source, progress=sys.stderr.isatty())  # no bar in log files
        if not minari_dataset_exists(minari_id):
            raise UnknownNameError(
                f"dataset '{source}' has not been made yet (no Minari dataset '{minari_id}'); "
                f"make it with `seqrl data make {source}`")
        dataset = load_minari(minari_id)
        dataset.name = source
    if env is not None:
        from seqrl.envs.registry import gym_id

        dataset.env_id = gym_id(env)
    return dataset


def guess_env_from_filename(path: str) -> str | None:
    """``hopper_medium-v2.hdf5`` -> ``Hopper-v5``; None when the name starts with no known env."""
    stem = Path(path).name.lower()
    first = re.split(r"[-_.]", stem, maxsplit=1)[0]
    name = env_name(first)
    return ENVIRONMENTS.get(name)


def reference_for(dataset: TrajectoryDataset) -> tuple[float, float] | None:
    """(ref_min, ref_max) for normalised scores: the dataset's own, else D4RL's for its env, else None."""
    lo, hi = dataset.metadata.get("ref_min_score"), dataset.metadata.get("ref_max_score")
    if lo is not None and hi is not None:
        return float(lo), float(hi)
    if dataset.env_id:
        return D4RL_REFERENCE_RETURNS.get(env_name(dataset.env_id))
    return None


def dataset_info(dataset: TrajectoryDataset) -> dict:
    """The summary ``seqrl data info --json`` prints, with exactly these keys (plus, for multi-task
    data, the per-task ones of ``task_return_summary``)."""
    if dataset.num_episodes == 0:
        raise DatasetError(f"{dataset.name}: dataset is empty (0 steps)")
    returns = dataset.episode_returns
    ref = reference_for(dataset)
    tasks = task_return_summary(dataset) if dataset.episode_tasks is not None else {}
    return {
        "episodes": int(dataset.num_episodes),
        "steps": int(dataset.num_steps),
        "obs_dim": int(dataset.obs_dim),
        "act_dim": int(dataset.act_dim),
        "return_mean": float(np.mean(returns)),
        "return_min": float(np.min(returns)),
        "return_max": float(np.max(returns)),
        "normalized_return_mean": (float(np.mean(normalized_score(returns, *ref)))
                                   if ref is not None else None),
        **tasks,
    }


def task_return_summary(dataset: TrajectoryDataset) -> dict:
    """Multi-task data: the mean over tasks of each task's mean episode return, over all tasks and over
    the family's test tasks, and the mean episode length. Every task weighs the same, as in the
    meta-test; the plain episode mean weighs a task by how many (short) episodes it has."""
    returns, tasks = dataset.episode_returns, dataset.episode_tasks
    per_task = {int(t): float(returns[tasks == t].mean()) for t in np.unique(tasks)}
    test = [per_task[t] for t in dataset.metadata.get("seqrl_test_tasks", []) if t in per_task]
    return {
        "tasks": len(per_task),
        "task_mean_return": float(np.mean(list(per_task.values()))),
        "test_task_mean_return": float(np.mean(test)) if test else None,
        "mean_episode_length": float(dataset.episode_lengths.mean()),
    }
