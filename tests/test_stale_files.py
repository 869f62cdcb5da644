"""Leftovers of killed writes: removed by the next write to the same place, never a live writer's;
a Minari overwrite killed between its two renames gets its old dataset back."""

import os
import stat

import numpy as np
import torch

from conftest import make_dataset
from seqrl.data import minari_io
from seqrl.data.d4rl import load_d4rl, save_d4rl
from seqrl.data.minari_io import load_minari, minari_dataset_exists, save_minari
from seqrl.stale_files import pid_alive, writer_pid
from seqrl.train.checkpoint import save_checkpoint

DEAD = 999_999_999          # above any Linux pid_max: no process has it
LIVE = os.getppid()         # the test runner's parent: running while the test runs


def test_writer_pid_and_liveness():
    assert writer_pid(".last.pt.123.k3j_a.tmp", ".last.pt.") == 123
    assert writer_pid(".seqrl-tmp-77-abc", ".seqrl-tmp-") == 77
    assert writer_pid(".medium-v0.old-5", ".medium-v0.old-") == 5
    assert writer_pid(".last.pt.k3ja.tmp", ".last.pt.") is None        # written before ids were
    assert pid_alive(os.getpid()) and pid_alive(LIVE) and not pid_alive(DEAD)


def test_checkpoint_save_removes_dead_writers_temporaries_only(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dead, legacy, live = (folder / f".last.pt.{DEAD}.ab.tmp", folder / ".last.pt.xyz.tmp",
                          folder / f".last.pt.{LIVE}.cd.tmp")
    for path in (dead, legacy, live):
        path.write_bytes(b"partial")
    save_checkpoint({"step": 1, "w": torch.ones(2)}, folder / "last.pt")
    assert not dead.exists() and not legacy.exists() and live.exists()
    assert torch.load(folder / "last.pt")["step"] == 1
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((folder / "last.pt").stat().st_mode) == 0o666 & ~umask


def test_d4rl_save_removes_dead_writers_temporaries(tmp_path):
    dead, live = tmp_path / f".d.hdf5.{DEAD}.tmp", tmp_path / f".d.hdf5.{LIVE}.tmp"
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    save_d4rl(make_dataset([4, 4], obs_dim=11, act_dim=3), tmp_path / "d.hdf5")
    assert not dead.exists() and live.exists() and load_d4rl(tmp_path / "d.hdf5").num_steps == 8


def test_minari_overwrite_killed_between_renames_gets_the_old_dataset_back(isolated_minari_root, capsys):
    save_minari(make_dataset([5, 4]), "seqrl-test/x/keep-v0")
    final = isolated_minari_root / "seqrl-test" / "x" / "keep-v0"
    os.replace(final, final.with_name(f".keep-v0.old-{DEAD}"))   # where a killed overwrite stops
    assert minari_dataset_exists("seqrl-test/x/keep-v0")
    assert "restored Minari dataset 'keep-v0'" in capsys.readouterr().err
    assert load_minari("seqrl-test/x/keep-v0").num_steps == 9
    assert not list(final.parent.glob(".keep-v0.old-*"))


def test_minari_leftovers_of_killed_writes_are_removed_but_not_live_ones(isolated_minari_root):
    save_minari(make_dataset([3]), "seqrl-test/x/y-v0")
    final = isolated_minari_root / "seqrl-test" / "x" / "y-v0"
    # killed while deleting the old copy after a successful swap: the new one is in place
    (final.parent / f".y-v0.old-{DEAD}" / "data").mkdir(parents=True)
    save_minari(make_dataset([6]), "seqrl-test/x/y-v0", overwrite=True)
    assert not list(final.parent.glob(".y-v0.old-*"))
    assert np.array_equal(load_minari("seqrl-test/x/y-v0").episode_lengths, [6])
    for name in (f".seqrl-tmp-{DEAD}-ab", ".seqrl-tmp-legacy", f".seqrl-tmp-{LIVE}-cd"):
        (isolated_minari_root / name).mkdir()
    assert minari_io.clean_stale_temporaries() == 2
    assert [p.name for p in isolated_minari_root.glob(".seqrl-tmp-*")] == [f".seqrl-tmp-{LIVE}-cd"]


def test_shape_mismatch_names_the_first_mismatch_in_one_line():
    from seqrl.train.checkpoint import shape_mismatch

    try:
        torch.nn.Linear(3, 5).load_state_dict(torch.nn.Linear(3, 4).state_dict())
    except RuntimeError as exc:
        message = shape_mismatch(exc)
    assert "\n" not in message and message.startswith("size mismatch for weight")
    assert "torch.Size([4, 3])" in message and message.endswith("(and 1 more)")
