"""D4RL's HDF5 layout: read it, and write seqrl datasets in it.

The layout (as in D4RL's ``get_dataset``): flat step arrays ``observations`` (N, obs_dim), ``actions``
(N, act_dim), ``rewards`` (N,), ``terminals`` (N,), ``timeouts`` (N,), optionally ``next_observations``
and a group ``infos/`` of per-step arrays. Episodes end after a step whose terminal or timeout flag is
set; a last unfinished episode is kept and marked truncated. Files written by seqrl also carry the root
attribute ``env_id`` (other readers ignore it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from seqrl.data.trajectories import TrajectoryDataset
from seqrl.errors import DatasetError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def load_d4rl(path: str | os.PathLike, env_id: str | None = None, check_finite: bool = True
              ) -> TrajectoryDataset:
    """Read a D4RL-layout HDF5 file into a TrajectoryDataset.

    ``env_id`` names the gymnasium environment when the file does not (plain D4RL files do not);
    otherwise the file's ``env_id`` attribute, if any, is used.
    Raises DatasetError with a one-line message for every malformed input.
    """
    import h5py

    path = Path(path)
    label = str(path)
    if not path.exists():
        raise DatasetError(f"no such file: {label}")
    if path.is_dir():
        raise DatasetError(f"{label} is a directory, not an HDF5 file")
    with open(path, "rb") as fh:
        if fh.read(8) != HDF5_SIGNATURE:
            raise DatasetError(f"{label} is not an HDF5 file")
    try:
        fh5 = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{label} is truncated or corrupt (h5py: {_short(exc)})") from None
    try:
        with fh5:
            missing = [k for k in REQUIRED_KEYS if k not in fh5]
            if missing:
                raise DatasetError(f"{label}: missing required key '{missing[0]}'")
            arrays = {k: _read(fh5, k, label) for k in REQUIRED_KEYS}
            if "timeouts" in fh5:
                arrays["timeouts"] = _read(fh5, "timeouts", label)
            else:
                print(f"warning: {label} has no 'timeouts'; episodes are split on terminals only",
                      file=sys.stderr)
                arrays["timeouts"] = np.zeros(len(arrays["terminals"]), dtype=bool)
            next_obs = _read(fh5, "next_observations", label) if "next_observations" in fh5 else None
            infos = {}
            if "infos" in fh5 and hasattr(fh5["infos"], "keys"):
                for key in fh5["infos"]:
                    if hasattr(fh5["infos"][key], "shape"):
                        infos[key] = _read(fh5, f"infos/{key}", label)
            file_env = fh5.attrs.get("env_id")
            if isinstance(file_env, bytes):
                file_env = file_env.decode()
    except OSError as exc:  # data blocks cut off after a valid header
        raise DatasetError(f"{label} is truncated or corrupt (h5py: {_short(exc)})") from None

    n = len(arrays["observations"])
    if n == 0:
        raise DatasetError(f"{label}: dataset is empty (0 steps)")
    for key in ("actions", "rewards", "terminals", "timeouts"):
        if len(arrays[key]) != n:
            raise DatasetError(f"{label}: '{key}' has {len(arrays[key])} rows but 'observations' has {n}")
    for key, arr in {"rewards": arrays["rewards"], "terminals": arrays["terminals"],
                     "timeouts": arrays["timeouts"]}.items():
        if arr.ndim > 1 and arr.shape[1:] != (1,):
            raise DatasetError(f"{label}: '{key}' must hold one value per step, got shape {arr.shape}")
    dataset = TrajectoryDataset(
        observations=arrays["observations"], actions=arrays["actions"], rewards=arrays["rewards"],
        terminations=arrays["terminals"], truncations=arrays["timeouts"],
        next_observations=next_obs, infos=infos, env_id=env_id or file_env or None,
        name=label, metadata={"source": "d4rl", "path": str(path)})
    if check_finite:
        dataset.check_finite()
    return dataset


def save_d4rl(dataset: TrajectoryDataset, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``dataset`` in D4RL's layout, atomically (temporary file in the same folder, then rename).

    Without ``overwrite`` an existing file is left alone and DatasetError is raised.
    """
    import h5py

    path = Path(path)
    if path.exists() and not overwrite:
        raise DatasetError(f"{path} already exists (pass overwrite=True / --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    from seqrl.stale_files import remove_dead_leftovers

    remove_dead_leftovers(path.parent, f".{path.name}.", ".tmp")      # of earlier writes that were killed
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("observations", data=dataset.observations)
            f.create_dataset("actions", data=dataset.actions)
            f.create_dataset("rewards", data=dataset.rewards)
            f.create_dataset("terminals", data=dataset.terminations)
            f.create_dataset("timeouts", data=dataset.truncations)
            if dataset.next_observations is not None:
                f.create_dataset("next_observations", data=dataset.next_observations)
            for key, arr in dataset.infos.items():
                f.create_dataset(f"infos/{key}", data=arr)
            if dataset.env_id:
                f.attrs["env_id"] = dataset.env_id
            for key in ("ref_min_score", "ref_max_score"):
                if dataset.metadata.get(key) is not None:
                    f.attrs[key] = float(dataset.metadata[key])
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _read(f, key: str, label: str) -> np.ndarray:
    node = f[key]
    if not hasattr(node, "shape"):
        raise DatasetError(f"{label}: '{key}' is a group, expected an array")
    try:
        return node[()]
    except (OSError, RuntimeError) as exc:
        raise DatasetError(f"{label} is truncated or corrupt: cannot read '{key}' "
                           f"(h5py: {_short(exc)})") from None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
