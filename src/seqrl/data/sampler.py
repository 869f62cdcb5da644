"""Batches of fixed-length windows for sequence models, gathered with one fancy-indexing call.

Three ways to choose windows, all seeded and vectorised (no Python loop per sample):
  * ``sample``: Decision Transformer segments. A uniformly drawn step row picks the episode (so episodes
    are chosen with probability proportional to their length, as in the DT reference code) and is the
    window's first step; the window runs K steps or to the episode's end.
  * ``sample_fragment_pairs``: two independently placed fragments of the same episode per row, the
    positive pairs of CMT's contrastive loss (other rows in the batch are the negatives).
  * ``trajectories``: whole episodes from their first step.

Windows shorter than K are padded on the right with zeros and ``mask`` is False there. Right padding
keeps step i of a window at token position i, the same position it has during step-by-step rollouts,
and under causal attention no real token ever attends to a pad.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from seqrl.data.trajectories import TrajectoryDataset


@dataclass
class SegmentBatch:
    """A batch of B windows of length L (numpy arrays)."""

    observations: np.ndarray   # (B, L, obs_dim) float32, normalised when the sampler normalises
    actions: np.ndarray        # (B, L, act_dim) float32
    rewards: np.ndarray        # (B, L) float32, times reward_scale
    returns_to_go: np.ndarray  # (B, L) float32, divided by return_scale
    timesteps: np.ndarray      # (B, L) int64, step index within the episode
    mask: np.ndarray           # (B, L) bool, False on padding
    episode_ids: np.ndarray    # (B,) int64
    starts: np.ndarray         # (B,) int64, dataset row of each window's first step

    def to_torch(self, device=None) -> dict:
        """The arrays as torch tensors (a dict keyed by field name)."""
        import torch

        return {f.name: torch.from_numpy(getattr(self, f.name)).to(device, non_blocking=True)
                for f in fields(self)}

    def __len__(self) -> int:
        return len(self.episode_ids)


class SegmentSampler:
    """Draws SegmentBatches from a TrajectoryDataset.

    Args:
        dataset: the trajectories.
        context_len: K, the window length of ``sample``.
        batch_size: default number of windows per batch.
        return_scale: returns-to-go are divided by this (DT uses 1000 for MuJoCo).
        reward_scale: rewards are multiplied by this.
        normalize_observations: subtract the mean and divide by the std of the observations.
        obs_mean, obs_std: statistics to normalise with; default: the dataset's own. Pass the
            training data's statistics when sampling held-out data.
        gamma: discount of the returns-to-go (1.0 as in DT).
        seed: seed of the sampler's own generator.
    """

    def __init__(self, dataset: TrajectoryDataset, context_len: int = 20, batch_size: int = 64,
                 return_scale: float = 1000.0, reward_scale: float = 1.0,
                 normalize_observations: bool = True, obs_mean: np.ndarray | None = None,
                 obs_std: np.ndarray | None = None, gamma: float = 1.0, seed: int = 0):
        if context_len < 1:
            raise ValueError(f"context_len must be >= 1, got {context_len}")
        if dataset.num_steps == 0:
            raise ValueError(f"{dataset.name}: cannot sample from an empty dataset")
        self.dataset = dataset
        self.context_len = context_len
        self.batch_size = batch_size
        self.return_scale = float(return_scale)
        self.reward_scale = float(reward_scale)
        self.normalize_observations = normalize_observations
        if normalize_observations:
            mean, std = dataset.observation_stats()
            self.obs_mean = np.asarray(mean if obs_mean is None else obs_mean, dtype=np.float32)
            self.obs_std = np.asarray(std if obs_std is None else obs_std, dtype=np.float32)
        else:
            self.obs_mean = self.obs_std = None
        self.rtg = dataset.returns_to_go(gamma)
        self._starts = dataset.offsets[:-1]
        self._ends = dataset.offsets[1:]
        self.rng = np.random.Generator(np.random.PCG64(seed))

    # ------------------------------------------------------------------ window choice
    def sample(self, batch_size: int | None = None) -> SegmentBatch:
        """DT segments of length K (see the module docstring)."""
        b = batch_size or self.batch_size
        rows = self.rng.integers(0, self.dataset.num_steps, size=b)
        episodes = self.dataset.episode_of_step[rows].astype(np.int64)
        return self.gather(episodes, rows, self.context_len)

    def sample_fragment_pairs(self, batch_size: int | None = None, length: int | None = None
                              ) -> tuple[SegmentBatch, SegmentBatch]:
        """Two fragments of the same episode per row (episodes drawn proportionally to length).

        Each fragment starts uniformly where a full ``length`` window fits (at the episode's first
        step when the episode is shorter than ``length``).
        """
        b = batch_size or self.batch_size
        length = length or self.context_len
        rows = self.rng.integers(0, self.dataset.num_steps, size=b)
        episodes = self.dataset.episode_of_step[rows].astype(np.int64)
        first = self.fragments(episodes, length)
        return first, self.fragments(episodes, length)

    def fragments(self, episode_ids: np.ndarray, length: int,
                  rng: np.random.Generator | None = None) -> SegmentBatch:
        """One fragment of ``length`` steps per episode in ``episode_ids``, starting uniformly where it
        fits (at the episode's first step when the episode is shorter); drawn with ``rng`` (default:
        the sampler's own generator)."""
        rng = self.rng if rng is None else rng
        lo = self._starts[episode_ids]
        room = np.maximum(self._ends[episode_ids] - lo - length, 0) + 1  # number of valid starts
        starts = lo + (rng.random(len(episode_ids)) * room).astype(np.int64)
        return self.gather(episode_ids, starts, length)

    def trajectories(self, episode_ids, max_len: int | None = None) -> SegmentBatch:
        """Whole episodes from their first step, padded to the longest (or cut at ``max_len``)."""
        episode_ids = np.asarray(episode_ids, dtype=np.int64)
        length = int(self.dataset.episode_lengths[episode_ids].max())
        if max_len is not None:
            length = min(length, max_len)
        return self.gather(episode_ids, self._starts[episode_ids], length)

    # ------------------------------------------------------------------ gathering
    def gather(self, episode_ids: np.ndarray, starts: np.ndarray, length: int) -> SegmentBatch:
        """Windows of ``length`` steps beginning at dataset rows ``starts`` inside ``episode_ids``."""
        ds = self.dataset
        rows = starts[:, None] + np.arange(length)                  # (B, L)
        ends = self._ends[episode_ids][:, None]
        mask = rows < ends
        rows = np.minimum(rows, ends - 1)                           # pads read a valid row, then zeroed
        obs = ds.observations[rows].astype(np.float32, copy=False)  # (B, L, obs_dim)
        if self.normalize_observations:
            obs = (obs - self.obs_mean) / self.obs_std
        obs[~mask] = 0.0
        actions = ds.actions[rows].astype(np.float32, copy=False)
        actions[~mask] = 0.0
        rewards = np.where(mask, ds.rewards[rows] * self.reward_scale, 0.0).astype(np.float32)
        rtg = np.where(mask, self.rtg[rows] / self.return_scale, 0.0).astype(np.float32)
        timesteps = np.where(mask, rows - self._starts[episode_ids][:, None], 0)
        return SegmentBatch(observations=obs, actions=actions, rewards=rewards, returns_to_go=rtg,
                            timesteps=timesteps.astype(np.int64), mask=mask,
                            episode_ids=episode_ids, starts=np.asarray(starts, dtype=np.int64))

    # ------------------------------------------------------------------ resumability
    def state_dict(self) -> dict:
        """The generator state, so a resumed run draws the same batches as an uninterrupted one."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
