import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_dataset
from seqrl.data.trajectories import TrajectoryDataset, episode_offsets_from_flags, returns_to_go
from seqrl.errors import DatasetError


def slow_returns_to_go(rewards, offsets, gamma):
    out = np.zeros(len(rewards))
    for e in range(len(offsets) - 1):
        acc = 0.0
        for i in range(offsets[e + 1] - 1, offsets[e] - 1, -1):
            acc = rewards[i] + gamma * acc
            out[i] = acc
    return out


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=12),
       gamma=st.sampled_from([1.0, 0.99, 0.9, 0.5, 0.0]), seed=st.integers(0, 10_000))
def test_returns_to_go_matches_slow_reference(lengths, gamma, seed):
    rewards = np.random.default_rng(seed).uniform(-5, 5, sum(lengths))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    np.testing.assert_allclose(returns_to_go(rewards, offsets, gamma),
                               slow_returns_to_go(rewards, offsets, gamma), rtol=1e-10, atol=1e-9)


def test_returns_to_go_long_episode_small_gamma_stays_exact():
    rewards = np.ones(5000)
    offsets = np.array([0, 5000])
    np.testing.assert_allclose(returns_to_go(rewards, offsets, 0.9),
                               slow_returns_to_go(rewards, offsets, 0.9), rtol=1e-12)


def test_episode_split_terminal_timeout_and_unfinished():
    term = np.array([0, 0, 1, 0, 0, 0, 0], bool)
    trunc = np.array([0, 0, 0, 0, 1, 0, 0], bool)
    assert episode_offsets_from_flags(term, trunc).tolist() == [0, 3, 5, 7]
    ds = TrajectoryDataset(np.zeros((7, 2)), np.zeros((7, 1)), np.arange(7.0), term, trunc)
    assert ds.num_episodes == 3
    assert ds.episode_lengths.tolist() == [3, 2, 2]
    assert ds.episode_returns.tolist() == [3.0, 7.0, 11.0]
    assert ds.episode_terminated.tolist() == [True, False, False]
    assert ds.truncations[-1]  # the unfinished last episode is marked truncated


def test_returns_and_rtg_are_consistent():
    ds = make_dataset([5, 7, 1, 9])
    rtg = ds.returns_to_go()
    np.testing.assert_allclose(rtg[ds.offsets[:-1]], ds.episode_returns, rtol=1e-5)
    assert ds.returns_to_go() is rtg  # computed once


def test_observation_stats():
    ds = make_dataset([50, 30])
    mean, std = ds.observation_stats()
    np.testing.assert_allclose(mean, ds.observations.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, ds.observations.std(0), rtol=1e-5)


def test_select_filter_top_k_slice_concatenate():
    ds = make_dataset([4, 6, 2, 8], seed=3)
    sel = ds.select_episodes([2, 0])
    assert sel.episode_lengths.tolist() == [2, 4]
    np.testing.assert_array_equal(sel.observations[:2], ds.episode(2)["observations"])
    np.testing.assert_array_equal(sel.next_observations[2:], ds.episode(0)["next_observations"])
    assert ds.slice(1, 3).episode_lengths.tolist() == [6, 2]
    long_ones = ds.filter(lambda d: d.episode_lengths >= 5)
    assert long_ones.episode_lengths.tolist() == [6, 8]
    top = ds.top_k(2)
    assert top.episode_returns.tolist() == sorted(ds.episode_returns.tolist(), reverse=True)[:2]
    both = TrajectoryDataset.concatenate([ds.slice(0, 2), ds.slice(2, 4)])
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "offsets"):
        np.testing.assert_array_equal(getattr(both, key), getattr(ds, key))


def test_length_mismatch_and_nonfinite_are_reported():
    with pytest.raises(DatasetError, match="'actions' has 4 rows but 'observations' has 5"):
        TrajectoryDataset(np.zeros((5, 2)), np.zeros((4, 1)), np.zeros(5), np.zeros(5), np.zeros(5))
    obs = np.zeros((5, 2))
    obs[3, 1] = np.nan
    ds = TrajectoryDataset(obs, np.zeros((5, 1)), np.zeros(5), np.zeros(5), np.zeros(5))
    with pytest.raises(DatasetError, match="'observations' contains NaN at index 3"):
        ds.check_finite()


def test_memory_is_close_to_raw_bytes():
    ds = make_dataset([1000] * 20, obs_dim=11, act_dim=3)
    raw = ds.nbytes
    ds.returns_to_go()
    ds.observation_stats()
    _ = ds.episode_of_step
    assert ds.nbytes <= 1.5 * raw
