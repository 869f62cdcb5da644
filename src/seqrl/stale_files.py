"""Leftovers of writes that were killed (SIGKILL, power loss): temporary files and folders.

Every atomic write in seqrl (checkpoints, D4RL files, Minari datasets) builds its output under a
hidden temporary name that carries the writing process's id, then renames it into place. A write that
is killed leaves that temporary behind; the next write to the same place removes the leftovers whose
process is gone (a live process's are its work in progress and are left alone).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # exists, owned by someone else
        return True
    return True


def writer_pid(name: str, prefix: str) -> int | None:
    """The process id written right after ``prefix`` in ``name`` (".last.pt.123.x.tmp" with prefix
    ".last.pt." gives 123); None when there is none (a name from before ids were written)."""
    token = name[len(prefix):].split(".")[0].split("-")[0]
    return int(token) if token.isdigit() else None


def dead_leftovers(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Entries of ``folder`` named ``prefix...suffix`` whose writer is no longer running."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(suffix):
            pid = writer_pid(entry.name, prefix)
            if pid is None or (pid != os.getpid() and not pid_alive(pid)):
                found.append(entry)
    return found


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_dead_leftovers(folder: Path, prefix: str, suffix: str = "") -> int:
    """Remove what ``dead_leftovers`` finds; returns how many entries were removed."""
    stale = dead_leftovers(folder, prefix, suffix)
    for path in stale:
        remove(path)
    return len(stale)
