import json

import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from conftest import make_dataset
from seqrl.cli import main
from seqrl.data import minari_io
from seqrl.data.d4rl import load_d4rl, save_d4rl
from seqrl.data.minari_io import load_minari, save_minari
from seqrl.data.sources import load_source
from seqrl.errors import DatasetError, UnknownNameError


def create_with_minari(dataset_id, lengths, seed=0):
    """As a Minari user would: EpisodeBuffers with T+1 observation rows, minari's own writer."""
    rng = np.random.default_rng(seed)
    buffers = []
    for i, t in enumerate(lengths):
        buffers.append(EpisodeBuffer(
            id=i, observations=rng.standard_normal((t + 1, 11)), actions=rng.uniform(-1, 1, (t, 3)).astype(np.float32),
            rewards=np.full(t, float(i + 1)), terminations=np.array([False] * (t - 1) + [i == 0]),
            truncations=np.array([False] * (t - 1) + [i != 0]), infos={}))
    with pytest.warns(UserWarning):
        minari.create_dataset_from_buffers(dataset_id, buffers, env="Hopper-v5", algorithm_name="hand")
    return buffers


def test_minari_dataset_made_by_minari_is_read_exactly(capsys):
    buffers = create_with_minari("user/hopper/hand-v0", [4, 7, 2])
    ds = load_minari("user/hopper/hand-v0")
    assert ds.episode_lengths.tolist() == [4, 7, 2]
    assert ds.env_id == "Hopper-v5"
    np.testing.assert_array_equal(ds.observations[:4], buffers[0].observations[:-1])
    np.testing.assert_array_equal(ds.next_observations[:4], buffers[0].observations[1:])  # the N+1 row
    assert ds.episode_terminated.tolist() == [True, False, False]
    assert main(["data", "info", "minari:user/hopper/hand-v0", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["episodes"], info["steps"], info["obs_dim"], info["act_dim"]) == (3, 13, 11, 3)
    assert (info["return_min"], info["return_max"]) == (4.0, 14.0)  # 4*1, 7*2, 2*3
    assert info["return_mean"] == pytest.approx(8.0)
    assert info["normalized_return_mean"] == pytest.approx(100 * (8.0 + 20.272305) / (3234.3 + 20.272305))


def test_round_trip_seqrl_minari_seqrl_and_minari_can_load_it():
    ds = make_dataset([5, 9, 3], obs_dim=11, act_dim=3)
    ds.env_id = "Hopper-v5"
    ds.metadata.update(ref_min_score=-20.0, ref_max_score=3000.0)
    save_minari(ds, "seqrl-test/hopper/rt-v0")
    back = load_minari("seqrl-test/hopper/rt-v0")
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "offsets",
                "next_observations"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
    loaded = minari.load_dataset("seqrl-test/hopper/rt-v0")
    assert loaded.total_episodes == 3 and loaded.total_steps == 17
    assert loaded.storage.metadata["ref_max_score"] == 3000.0
    assert back.metadata["ref_min_score"] == -20.0


def test_round_trip_d4rl_minari_d4rl(tmp_path):
    ds = make_dataset([6, 4], obs_dim=11, act_dim=3)
    ds.env_id = "Hopper-v5"
    save_d4rl(ds, tmp_path / "a.hdf5")
    assert main(["data", "export", str(tmp_path / "a.hdf5"), "--to", "minari", "--out", "me/hopper/a-v0"]) == 0
    assert main(["data", "export", "minari:me/hopper/a-v0", "--to", "d4rl", "--out", str(tmp_path / "b.hdf5")]) == 0
    a, b = load_d4rl(tmp_path / "a.hdf5"), load_d4rl(tmp_path / "b.hdf5")
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "offsets",
                "next_observations"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


def test_interrupted_write_leaves_nothing_registered(monkeypatch, isolated_minari_root):
    ds = make_dataset([5, 5])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(minari, "create_dataset_from_buffers", crash)
        with pytest.raises(KeyboardInterrupt):
            save_minari(ds, "seqrl-test/x/y-v0")
    assert not (isolated_minari_root / "seqrl-test" / "x" / "y-v0").exists()
    assert not list(isolated_minari_root.glob(".seqrl-tmp-*"))
    with pytest.raises(UnknownNameError):
        load_minari("seqrl-test/x/y-v0")
    save_minari(ds, "seqrl-test/x/y-v0")  # the next write starts clean
    assert load_minari("seqrl-test/x/y-v0").num_steps == 10


def test_overwrite_needs_force_and_stale_temporaries_are_cleaned(isolated_minari_root):
    ds = make_dataset([5])
    save_minari(ds, "seqrl-test/x/z-v0")
    with pytest.raises(DatasetError, match="already exists"):
        save_minari(ds, "seqrl-test/x/z-v0")
    save_minari(make_dataset([7]), "seqrl-test/x/z-v0", overwrite=True)
    assert load_minari("seqrl-test/x/z-v0").num_steps == 7
    (isolated_minari_root / ".seqrl-tmp-dead").mkdir()
    assert minari_io.clean_stale_temporaries() == 1


def test_seqrl_names_resolve_to_the_minari_root():
    with pytest.raises(UnknownNameError, match="has not been made yet"):
        load_source("hopper-medium")
    ds = make_dataset([5], obs_dim=11, act_dim=3)
    save_minari(ds, "seqrl/hopper/medium-v0")
    assert load_source("hopper-medium").num_steps == 5


def test_bad_minari_id():
    with pytest.raises(DatasetError, match="bad Minari dataset id"):
        save_minari(make_dataset([3]), "no version")


def test_next_observations_that_minari_cannot_hold_are_warned_about(capsys):
    ds = make_dataset([5, 5])
    ds.next_observations[2] += 1.0
    assert ds.inconsistent_next_observations() == 1
    save_minari(ds, "seqrl-test/x/w-v0")
    assert "1 next_observations differ" in capsys.readouterr().err
