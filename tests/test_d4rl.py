import json

import h5py
import numpy as np
import pytest

from conftest import make_dataset
from seqrl.cli import main
from seqrl.data.d4rl import load_d4rl, save_d4rl
from seqrl.errors import DatasetError


def write_by_hand(path):
    """As a new user would: three episodes, ending in a terminal, a timeout, and unfinished."""
    rng = np.random.default_rng(0)
    n = 4 + 3 + 2
    rewards = np.arange(1, n + 1, dtype=np.float32)  # episode returns 10, 18, 17
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[3] = True
    timeouts[6] = True
    with h5py.File(path, "w") as f:
        f["observations"] = rng.standard_normal((n, 11)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        f["rewards"] = rewards
        f["terminals"] = terminals
        f["timeouts"] = timeouts
        f["infos/qpos"] = rng.standard_normal((n, 6)).astype(np.float32)
    return rewards


def test_hand_written_file_is_read_exactly(tmp_path, capsys):
    path = tmp_path / "hopper_medium-v2.hdf5"
    write_by_hand(path)
    ds = load_d4rl(path)
    assert ds.episode_lengths.tolist() == [4, 3, 2]
    assert ds.episode_returns.tolist() == [10.0, 18.0, 17.0]
    assert ds.episode_terminated.tolist() == [True, False, False]
    assert ds.truncations.nonzero()[0].tolist() == [6, 8]  # timeout, and the unfinished last episode
    assert ds.infos["qpos"].shape == (9, 6)
    assert main(["data", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"episodes", "steps", "obs_dim", "act_dim", "return_mean", "return_min",
                         "return_max", "normalized_return_mean"}
    assert (info["episodes"], info["steps"], info["obs_dim"], info["act_dim"]) == (3, 9, 11, 3)
    assert info["return_mean"] == pytest.approx(15.0)
    assert (info["return_min"], info["return_max"]) == (10.0, 18.0)
    # environment from the file name ("hopper_..."), D4RL's hopper reference returns
    assert info["normalized_return_mean"] == pytest.approx(100 * (15.0 + 20.272305) / (3234.3 + 20.272305))


def test_environment_unknown_gives_null_score_and_env_flag_fixes_it(tmp_path, capsys):
    path = tmp_path / "mydata.hdf5"
    write_by_hand(path)
    assert main(["data", "info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["normalized_return_mean"] is None
    assert main(["data", "info", str(path), "--json", "--env", "hopper"]) == 0
    score = json.loads(capsys.readouterr().out)["normalized_return_mean"]
    assert score == pytest.approx(100 * (15.0 + 20.272305) / (3234.3 + 20.272305))
    # an environment of other dimensions is refused, not scored against
    assert main(["data", "info", str(path), "--json", "--env", "walker2d"]) == 2
    assert "error: environment Walker2d-v5 has obs_dim 17 and act_dim 6" in capsys.readouterr().err


def test_round_trip_d4rl_seqrl_d4rl(tmp_path):
    src = tmp_path / "a.hdf5"
    write_by_hand(src)
    first = load_d4rl(src)
    out = save_d4rl(first, tmp_path / "b.hdf5")
    second = load_d4rl(out)
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "offsets"):
        np.testing.assert_array_equal(getattr(first, key), getattr(second, key))
    np.testing.assert_array_equal(first.infos["qpos"], second.infos["qpos"])
    with h5py.File(src) as a, h5py.File(out) as b:
        for key in ("observations", "actions", "rewards", "terminals"):
            np.testing.assert_array_equal(a[key][()], b[key][()])
        # the only difference: the unfinished last episode is now marked as a timeout
        assert (b["timeouts"][()] != a["timeouts"][()]).nonzero()[0].tolist() == [8]


def test_next_observations_env_and_reference_survive(tmp_path):
    ds = make_dataset([5, 6])
    ds.env_id = "Hopper-v5"
    ds.metadata.update(ref_min_score=-1.0, ref_max_score=99.0)
    out = save_d4rl(ds, tmp_path / "x.h5")
    back = load_d4rl(out)
    np.testing.assert_array_equal(back.next_observations, ds.next_observations)
    assert back.env_id == "Hopper-v5"


def test_save_refuses_to_overwrite_and_is_atomic(tmp_path, monkeypatch):
    ds = make_dataset([5])
    path = save_d4rl(ds, tmp_path / "x.hdf5")
    before = path.read_bytes()
    with pytest.raises(DatasetError, match="already exists"):
        save_d4rl(ds, path)
    # a failure while writing leaves the old file untouched and no temporary behind
    monkeypatch.setattr(h5py.File, "create_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_d4rl(ds, path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.hdf5"]


def test_missing_timeouts_warns_and_splits_on_terminals(tmp_path, capsys):
    path = tmp_path / "old.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((6, 2), np.float32)
        f["actions"] = np.zeros((6, 1), np.float32)
        f["rewards"] = np.ones((6, 1), np.float32)  # (N, 1) rewards are accepted too
        f["terminals"] = np.array([0, 1, 0, 0, 0, 0], bool)
    ds = load_d4rl(path)
    assert ds.episode_lengths.tolist() == [2, 4]
    assert "no 'timeouts'" in capsys.readouterr().err
