"""Checkpoints: written atomically, found from a run directory, loaded without pickled code.

A checkpoint is one ``torch.save`` file holding plain data only (tensors, numbers, strings, lists and
dicts), so it loads with ``weights_only=True``. Keys:
  * ``policy``: what acting needs (model class and arguments, normalisation, return scale, env);
  * ``model``: the model's state dict;
  * ``trainer``: optimiser, scheduler, step, RNG states, sampler state, elapsed time (resume only);
  * ``config``: the resolved run configuration.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from seqrl.errors import SeqrlError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"


def checkpoint_path(run_dir_or_file: str | os.PathLike) -> Path:
    """The checkpoint file for a run directory (its last checkpoint) or a checkpoint file itself."""
    path = Path(run_dir_or_file)
    if path.is_dir():
        candidate = path / CHECKPOINT_DIR / LAST
        if not candidate.is_file() and (path / "representation" / CHECKPOINT_DIR / LAST).is_file():
            candidate = path / "representation" / CHECKPOINT_DIR / LAST  # a CMT run without tuning
        if not candidate.is_file():
            raise SeqrlError(f"'{path}' is not a seqrl run directory (no {CHECKPOINT_DIR}/{LAST} in it)")
        return candidate
    if not path.exists():
        raise SeqrlError(f"no such run directory or checkpoint: '{path}'")
    return path


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a rename. The
    temporary's name carries this process's id, so that a later save removes those of killed runs."""
    from seqrl.stale_files import remove_dead_leftovers

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(path.parent, f".{path.name}.", ".tmp")      # of earlier writes that were killed
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # the mode of the run's other files, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(run_dir_or_file: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint; a file that is not one gives a SeqrlError with one line."""
    path = checkpoint_path(run_dir_or_file)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:160]
        raise SeqrlError(f"'{path}' is not a readable seqrl checkpoint ({type(exc).__name__}: {reason})") \
            from None
    if not isinstance(state, dict) or "policy" not in state or "model" not in state:
        raise SeqrlError(f"'{path}' is not a seqrl checkpoint (no policy/model entries)")
    return state


def shape_mismatch(exc: RuntimeError) -> str:
    """torch's load_state_dict error in one line: its first mismatch, and how many more there are."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    details = lines[1:]
    if not details:
        return lines[0] if lines else str(exc)
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return details[0].rstrip(".") + more
