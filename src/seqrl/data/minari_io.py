"""Minari datasets: read them through the ``minari`` package, and write seqrl datasets as Minari ones.

Minari stores each episode with T+1 observation rows (the reset observation plus one per step) and T
rows of everything else. seqrl keeps rows 0..T-1 as ``observations`` and rows 1..T as
``next_observations``, so a round trip is exact. Datasets live under the Minari root: the folder in
``MINARI_DATASETS_PATH``, or ``~/.minari/datasets`` when it is unset (Minari's own rule).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from seqrl.data.trajectories import TrajectoryDataset
from seqrl.errors import DatasetError, UnknownNameError


def minari_root() -> Path:
    """The local Minari root folder (not created)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    # Absolute: minari joins paths from this variable, and a relative one breaks inside its writer.
    return (Path(env) if env else Path.home() / ".minari" / "datasets").absolute()


def minari_dataset_exists(dataset_id: str) -> bool:
    final = minari_root() / dataset_id
    if not (final / "data" / "metadata.json").is_file():
        recover_interrupted_overwrite(final)
    return (final / "data" / "metadata.json").is_file()


def recover_interrupted_overwrite(final: Path) -> None:
    """An overwrite moves the old dataset aside (``.NAME.old-PID``) before moving the new one in. If
    that process was killed in between, the old dataset is moved back; if it was killed after, while
    deleting the old one, the rest is deleted."""
    from seqrl.stale_files import dead_leftovers, remove

    for old in sorted(dead_leftovers(final.parent, f".{final.name}.old-")):
        if final.exists() or not (old / "data" / "metadata.json").is_file():
            remove(old)
        else:
            os.replace(old, final)
            print(f"warning: restored Minari dataset '{final.name}' in {final.parent} after an "
                  f"interrupted overwrite", file=sys.stderr)


def load_minari(dataset_id: str, check_finite: bool = True) -> TrajectoryDataset:
    """Read the local Minari dataset ``dataset_id`` (e.g. ``seqrl/hopper/medium-v0``)."""
    if not minari_dataset_exists(dataset_id):
        raise UnknownNameError(f"no Minari dataset '{dataset_id}' in {minari_root()} "
                               f"(set MINARI_DATASETS_PATH to the folder that holds it)")
    import minari

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = minari.load_dataset(dataset_id)
            episodes = list(ds.storage.get_episodes(ds.episode_indices))
    except Exception as exc:  # minari raises assorted types for broken folders
        raise DatasetError(f"minari:{dataset_id} cannot be read ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]})") from None
    if not episodes:
        raise DatasetError(f"minari:{dataset_id}: dataset is empty (0 episodes)")
    obs_rows, next_rows = [], []
    for ep in episodes:
        obs = ep["observations"]
        if isinstance(obs, dict):
            raise DatasetError(f"minari:{dataset_id}: dictionary observations are not supported; "
                               f"flatten them into one array first")
        if len(obs) != len(ep["actions"]) + 1:
            raise DatasetError(f"minari:{dataset_id}: episode {ep['id']} has {len(obs)} observation "
                               f"rows for {len(ep['actions'])} actions (expected one more)")
        obs_rows.append(obs[:-1])
        next_rows.append(obs[1:])
    meta = ds.storage.metadata
    episode_tasks = meta.get("seqrl_episode_tasks")
    env_spec = meta.get("env_spec")
    env_id = json.loads(env_spec).get("id") if isinstance(env_spec, str) else None
    dataset = TrajectoryDataset(
        observations=np.concatenate(obs_rows),
        actions=np.concatenate([ep["actions"] for ep in episodes]),
        rewards=np.concatenate([np.asarray(ep["rewards"]).reshape(-1) for ep in episodes]),
        terminations=np.concatenate([ep["terminations"] for ep in episodes]),
        truncations=np.concatenate([ep["truncations"] for ep in episodes]),
        offsets=np.concatenate([[0], np.cumsum([len(ep["actions"]) for ep in episodes])]),
        next_observations=np.concatenate(next_rows),
        env_id=env_id, name=f"minari:{dataset_id}",
        metadata={"source": "minari", "dataset_id": dataset_id,
                  **{k: meta[k] for k in ("ref_min_score", "ref_max_score", "algorithm_name",
                                          "description") if meta.get(k) is not None},
                  **{k: v for k, v in meta.items()
                     if k.startswith("seqrl_") and k != "seqrl_episode_tasks"}},
        episode_tasks=None if episode_tasks is None else np.asarray(episode_tasks, np.int64))
    if check_finite:
        dataset.check_finite()
    return dataset


def save_minari(dataset: TrajectoryDataset, dataset_id: str, overwrite: bool = False,
                algorithm_name: str = "seqrl", description: str | None = None,
                extra_metadata: dict | None = None) -> Path:
    """Write ``dataset`` as the Minari dataset ``dataset_id`` in the Minari root, atomically.

    The dataset is built in a temporary root on the same file system and moved into place only when
    complete, so an interrupted write leaves nothing half-registered. Episodes without
    ``next_observations`` repeat their last observation as the final (T+1-th) row.
    """
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    check_id(dataset_id)
    root = minari_root()
    final = root / dataset_id
    recover_interrupted_overwrite(final)
    if final.exists() and not overwrite:
        raise DatasetError(f"Minari dataset '{dataset_id}' already exists in {root} "
                           f"(pass overwrite=True / --force to replace it)")
    root.mkdir(parents=True, exist_ok=True)
    lost = dataset.inconsistent_next_observations()
    if lost:
        print(f"warning: {dataset.name}: {lost} next_observations differ from the following observation; "
              f"Minari keeps one observation sequence per episode, so those are not kept", file=sys.stderr)
    buffers = []
    for e in range(dataset.num_episodes):
        ep = dataset.episode(e)
        last = (ep["next_observations"][-1:] if dataset.next_observations is not None
                else ep["observations"][-1:])
        buffers.append(EpisodeBuffer(
            id=e, observations=np.concatenate([ep["observations"], last]), actions=ep["actions"],
            rewards=ep["rewards"], terminations=ep["terminations"], truncations=ep["truncations"],
            infos={}))
    obs_space = gym.spaces.Box(-np.inf, np.inf, (dataset.obs_dim,), dataset.observations.dtype)
    if np.issubdtype(dataset.actions.dtype, np.floating):
        act_space = gym.spaces.Box(-np.inf, np.inf, (dataset.act_dim,), dataset.actions.dtype)
    else:
        raise DatasetError(f"{dataset.name}: only continuous (float) actions can be exported to Minari")
    env_kwargs = {}
    if dataset.env_id:
        if dataset.env_id.startswith("seqrl/"):
            import seqrl.envs.tasks  # noqa: F401  (registers the task environments)
        env_kwargs["env"] = dataset.env_id
        try:  # use the environment's own spaces when they match the data
            spec_env = gym.make(dataset.env_id)
            if spec_env.observation_space.shape == obs_space.shape:
                obs_space = spec_env.observation_space
            if spec_env.action_space.shape == act_space.shape:
                act_space = spec_env.action_space
            spec_env.close()
        except Exception:
            pass
    tmp_root = Path(tempfile.mkdtemp(prefix=f".seqrl-tmp-{os.getpid()}-", dir=root))
    try:
        with minari_root_at(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minari.create_dataset_from_buffers(
                dataset_id, buffers, observation_space=obs_space, action_space=act_space,
                algorithm_name=algorithm_name, author="seqrl", author_email="n/a",
                code_permalink="n/a", description=description or f"exported by seqrl from {dataset.name}",
                ref_min_score=dataset.metadata.get("ref_min_score"),
                ref_max_score=dataset.metadata.get("ref_max_score"), **env_kwargs)
        extra_metadata = dict(extra_metadata or {})
        if dataset.episode_tasks is not None:
            extra_metadata["seqrl_episode_tasks"] = dataset.episode_tasks.tolist()
        if extra_metadata:
            _add_metadata(tmp_root / dataset_id / "data" / "metadata.json", extra_metadata)
        # Namespace metadata files (one per folder level) go in first, then the dataset folder.
        parts = Path(dataset_id).parts
        for depth in range(1, len(parts)):
            ns_file = tmp_root.joinpath(*parts[:depth], "namespace_metadata.json")
            dest = root.joinpath(*parts[:depth], "namespace_metadata.json")
            if ns_file.exists() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ns_file, dest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # overwrite: move the old one aside first so a crash never loses both
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp_root / dataset_id, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_root / dataset_id, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


def delete_minari(dataset_id: str) -> None:
    final = minari_root() / dataset_id
    if final.exists():
        shutil.rmtree(final)


def clean_stale_temporaries() -> int:
    """Remove temporary roots left by killed writes (not those of writes still running); returns how
    many were removed."""
    from seqrl.stale_files import remove_dead_leftovers

    return remove_dead_leftovers(minari_root(), ".seqrl-tmp-")


def check_id(dataset_id: str) -> None:
    """DatasetError unless ``dataset_id`` is a Minari id (no part may start with a dot: no '..')."""
    import re

    if (not re.fullmatch(r"([\w.-]+/)*[\w.-]+-v\d+", dataset_id)
            or any(part.startswith(".") for part in dataset_id.split("/"))):
        raise DatasetError(f"bad Minari dataset id '{dataset_id}': expected e.g. 'seqrl/hopper/medium-v0' "
                           f"(optional namespaces, a name, then -v<version>)")


def _add_metadata(path: Path, extra: dict) -> None:
    meta = json.loads(path.read_text())
    meta.update(extra)
    path.write_text(json.dumps(meta))


@contextmanager
def minari_root_at(path: Path):
    """Point MINARI_DATASETS_PATH at ``path`` (made absolute) for the duration of a with-block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path.absolute())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
