import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_dataset
from seqrl.data.sampler import SegmentSampler


def slow_window(ds, episode, start_row, length, mean, std, return_scale, reward_scale):
    """Reference: build one right-padded window step by step."""
    lo, hi = ds.offsets[episode], ds.offsets[episode + 1]
    rewards = ds.rewards.astype(np.float64)
    obs = np.zeros((length, ds.obs_dim))
    act = np.zeros((length, ds.act_dim))
    rew, rtg, ts, mask = np.zeros(length), np.zeros(length), np.zeros(length, int), np.zeros(length, bool)
    for j in range(length):
        row = start_row + j
        if row >= hi:
            break
        obs[j] = (ds.observations[row] - mean) / std
        act[j] = ds.actions[row]
        rew[j] = rewards[row] * reward_scale
        rtg[j] = rewards[row:hi].sum() / return_scale
        ts[j] = row - lo
        mask[j] = True
    return obs, act, rew, rtg, ts, mask


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=8), K=st.integers(1, 25),
       seed=st.integers(0, 1000))
def test_segments_match_slow_reference(lengths, K, seed):
    ds = make_dataset(lengths, seed=seed)
    sampler = SegmentSampler(ds, context_len=K, batch_size=16, return_scale=10.0, reward_scale=0.5,
                             seed=seed)
    batch = sampler.sample()
    for b in range(16):
        e, start = batch.episode_ids[b], batch.starts[b]
        assert ds.offsets[e] <= start < ds.offsets[e + 1]
        ref = slow_window(ds, e, start, K, sampler.obs_mean, sampler.obs_std, 10.0, 0.5)
        for got, want in zip((batch.observations[b], batch.actions[b], batch.rewards[b],
                              batch.returns_to_go[b], batch.timesteps[b], batch.mask[b]), ref):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        # right padding: real steps first, then pads only
        m = batch.mask[b]
        assert m[0] and not np.any(np.diff(m.astype(int)) > 0)


def test_episodes_drawn_proportionally_to_length():
    ds = make_dataset([10, 30, 60])
    sampler = SegmentSampler(ds, context_len=5, seed=1)
    counts = np.bincount(sampler.sample(60_000).episode_ids, minlength=3) / 60_000
    np.testing.assert_allclose(counts, [0.1, 0.3, 0.6], atol=0.01)


def test_starts_uniform_within_episode():
    ds = make_dataset([50])
    starts = SegmentSampler(ds, context_len=5, seed=2).sample(50_000).starts
    counts = np.bincount(starts, minlength=50) / 50_000
    assert counts.min() > 0.015 and counts.max() < 0.025  # 1/50 = 0.02 each


def test_seeded_and_resumable():
    ds = make_dataset([20, 35, 17])
    a = SegmentSampler(ds, seed=7)
    b = SegmentSampler(ds, seed=7)
    np.testing.assert_array_equal(a.sample().starts, b.sample().starts)
    state = a.state_dict()
    expected = a.sample().starts
    c = SegmentSampler(ds, seed=123)
    c.load_state_dict(state)
    np.testing.assert_array_equal(c.sample().starts, expected)
    assert not np.array_equal(SegmentSampler(ds, seed=8).sample().starts, expected)


def test_fragment_pairs_come_from_the_same_episode_and_fit():
    ds = make_dataset([5, 40, 100, 12])
    first, second = SegmentSampler(ds, seed=3).sample_fragment_pairs(batch_size=500, length=10)
    np.testing.assert_array_equal(first.episode_ids, second.episode_ids)
    for frag in (first, second):
        ends = ds.offsets[frag.episode_ids + 1]
        lengths = ds.episode_lengths[frag.episode_ids]
        full = lengths >= 10
        assert np.all(frag.starts[full] + 10 <= ends[full])       # long episodes: full windows
        assert np.all(frag.mask[full].all(axis=1))
        assert np.all(frag.starts[~full] == ds.offsets[frag.episode_ids[~full]])
    assert np.any(first.starts != second.starts)  # independently placed


def test_whole_trajectories():
    ds = make_dataset([3, 8, 5])
    batch = SegmentSampler(ds, normalize_observations=False).trajectories([0, 1, 2])
    assert batch.observations.shape == (3, 8, 3)
    assert batch.mask.sum(axis=1).tolist() == [3, 8, 5]
    np.testing.assert_array_equal(batch.observations[2, :5], ds.episode(2)["observations"])
    assert SegmentSampler(ds).trajectories([1], max_len=4).mask.shape == (1, 4)


def test_given_normalisation_statistics_are_used():
    ds = make_dataset([30])
    mean, std = np.full(3, 2.0, np.float32), np.full(3, 4.0, np.float32)
    batch = SegmentSampler(ds, context_len=30, obs_mean=mean, obs_std=std).trajectories([0])
    np.testing.assert_allclose(batch.observations[0], (ds.observations - 2.0) / 4.0, rtol=1e-6)


def test_to_torch():
    torch = pytest.importorskip("torch")
    batch = SegmentSampler(make_dataset([30]), context_len=4).sample(2).to_torch()
    assert batch["observations"].dtype == torch.float32 and batch["mask"].dtype == torch.bool
