"""The trajectory data model: one dataset as contiguous step arrays plus episode offsets.

Episode ``e`` occupies rows ``offsets[e]:offsets[e + 1]`` of every step array. Holding the data this way
(rather than a list of per-episode dicts) keeps memory close to the raw array bytes, lets the segment
sampler gather a whole batch with one fancy-indexing call, and makes per-episode reductions
(returns, lengths) single numpy calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from seqrl.errors import DatasetError


def episode_offsets_from_flags(terminations: np.ndarray, truncations: np.ndarray) -> np.ndarray:
    """Episode boundaries (E+1,) from per-step end flags: an episode ends after each flagged step.

    A trailing run of steps with no flag (an unfinished last episode) is kept as its own episode.
    """
    ends = np.flatnonzero(np.logical_or(terminations, truncations)) + 1
    n = len(terminations)
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    return np.concatenate([[0], ends]).astype(np.int64)


def returns_to_go(rewards: np.ndarray, offsets: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Per-step (discounted) return from that step to the end of its episode, float64, vectorised.

    For gamma = 1 this is a reverse cumulative sum over the whole array minus the sum past each
    episode's end (one pass). For gamma < 1 it is the exact recursion, vectorised across episodes.
    """
    r = np.asarray(rewards, dtype=np.float64)
    n = len(r)
    if n == 0:
        return r.copy()
    lengths = np.diff(offsets)
    episode_of_step = np.repeat(np.arange(len(lengths)), lengths)
    if gamma == 1.0:
        tail = np.cumsum(r[::-1])[::-1]  # tail[i] = sum(r[i:])
        tail_after_end = np.append(tail, 0.0)[offsets[1:]]  # sum(r[end_e:]) per episode
        return tail - tail_after_end[episode_of_step]
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    # G_t = r_t + gamma * G_{t+1}, run for all episodes at once: rows are grouped by their distance
    # from the episode's last step, and each group needs only the group before it (one numpy op per
    # distance, so at most max-episode-length ops, none per sample).
    from_end = (offsets[1:] - 1)[episode_of_step] - np.arange(n)
    order = np.argsort(from_end, kind="stable")
    counts = np.bincount(from_end)
    out = r.copy()
    pos = counts[0]
    for count in counts[1:]:
        rows = order[pos:pos + count]
        out[rows] += gamma * out[rows + 1]
        pos += count
    return out


@dataclass
class TrajectoryDataset:
    """An offline RL dataset: step arrays of length N and episode offsets of length E+1.

    Attributes:
        observations: (N, obs_dim) observation at each step (before the action).
        actions: (N, act_dim) action taken.
        rewards: (N,) reward received.
        terminations: (N,) bool, True where the episode ended in a terminal state (e.g. a fall).
        truncations: (N,) bool, True where the episode was cut off (time limit, or data ended).
        offsets: (E+1,) int64 episode boundaries; built from the flags when not given.
        next_observations: optional (N, obs_dim) observation after each step.
        infos: optional per-step arrays, each with N rows (e.g. D4RL's ``infos/qpos``).
        env_id: gymnasium environment id the data comes from, when known.
        name: a short label used in messages and summaries.
        episode_tasks: optional (E,) int64 task id of each episode (multi-task / meta-RL data; the
            ids index the task family's tasks, see seqrl.envs.tasks).
        metadata: free-form facts about the source (reference scores, generator, hashes, ...).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    offsets: np.ndarray | None = None
    next_observations: np.ndarray | None = None
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    env_id: str | None = None
    name: str = "dataset"
    metadata: dict[str, Any] = field(default_factory=dict)
    episode_tasks: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards).reshape(-1)
        self.terminations = np.asarray(self.terminations).reshape(-1).astype(bool, copy=False)
        self.truncations = np.asarray(self.truncations).reshape(-1).astype(bool, copy=False)
        self.observations = _as_2d(self.observations, "observations", self.name)
        self.actions = _as_2d(self.actions, "actions", self.name)
        if self.next_observations is not None:
            self.next_observations = _as_2d(self.next_observations, "next_observations", self.name)
        self._check_lengths()
        if self.offsets is None:
            self.offsets = episode_offsets_from_flags(self.terminations, self.truncations)
            # An unfinished last episode (data ends without a flag) is kept and marked truncated.
            if self.num_steps and not (self.terminations[-1] or self.truncations[-1]):
                self.truncations = self.truncations.copy()
                self.truncations[-1] = True
        else:
            self.offsets = np.asarray(self.offsets, dtype=np.int64)
            if (self.offsets[0] != 0 or self.offsets[-1] != self.num_steps
                    or np.any(np.diff(self.offsets) <= 0)):
                raise DatasetError(f"{self.name}: episode offsets must rise from 0 to {self.num_steps}")
        if self.episode_tasks is not None:
            self.episode_tasks = np.asarray(self.episode_tasks, dtype=np.int64).reshape(-1)
            if len(self.episode_tasks) != self.num_episodes:
                raise DatasetError(f"{self.name}: episode_tasks has {len(self.episode_tasks)} entries "
                                   f"for {self.num_episodes} episodes")
        self._cache: dict[Any, Any] = {}

    # ------------------------------------------------------------------ checks
    def _check_lengths(self) -> None:
        n = len(self.observations)
        arrays = {"actions": self.actions, "rewards": self.rewards, "terminations": self.terminations,
                  "truncations": self.truncations}
        if self.next_observations is not None:
            arrays["next_observations"] = self.next_observations
        arrays.update({f"infos/{k}": v for k, v in self.infos.items()})
        for key, arr in arrays.items():
            if len(arr) != n:
                raise DatasetError(
                    f"{self.name}: '{key}' has {len(arr)} rows but 'observations' has {n}")
        if self.next_observations is not None and self.next_observations.shape[1] != self.obs_dim:
            raise DatasetError(f"{self.name}: 'next_observations' has {self.next_observations.shape[1]} "
                               f"columns but 'observations' has {self.obs_dim}")

    def check_finite(self) -> None:
        """Raise DatasetError naming the first array and row holding NaN or inf."""
        arrays = {"observations": self.observations, "actions": self.actions, "rewards": self.rewards}
        if self.next_observations is not None:
            arrays["next_observations"] = self.next_observations
        for key, arr in arrays.items():
            first = first_nonfinite_row(arr)
            if first is not None:
                value = np.asarray(arr[first]).reshape(-1)
                kind = "NaN" if np.isnan(value).any() else "inf"
                raise DatasetError(f"{self.name}: '{key}' contains {kind} at index {first}")

    def inconsistent_next_observations(self) -> int:
        """Rows inside an episode whose ``next_observations`` differ from the following observation
        (0 for real environment data; formats with one observation sequence per episode, like
        Minari's, cannot keep such rows)."""
        if self.next_observations is None or self.num_steps < 2:
            return 0
        inside = np.ones(self.num_steps - 1, dtype=bool)
        inside[self.offsets[1:-1] - 1] = False  # last step of each episode but the final one
        differ = np.any(self.next_observations[:-1] != self.observations[1:], axis=1)
        return int(np.count_nonzero(differ & inside))

    # ------------------------------------------------------------------ sizes
    @property
    def num_steps(self) -> int:
        return len(self.observations)

    @property
    def num_episodes(self) -> int:
        return len(self.offsets) - 1

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def episode_returns(self) -> np.ndarray:
        """(E,) undiscounted return of each episode, float64."""
        if "returns" not in self._cache:
            if self.num_steps == 0:
                self._cache["returns"] = np.zeros(0)
            else:
                self._cache["returns"] = np.add.reduceat(
                    self.rewards.astype(np.float64), self.offsets[:-1])
        return self._cache["returns"]

    @property
    def episode_of_step(self) -> np.ndarray:
        """(N,) episode index of every step, int32 (cached)."""
        if "episode_of_step" not in self._cache:
            self._cache["episode_of_step"] = np.repeat(
                np.arange(self.num_episodes, dtype=np.int32), self.episode_lengths)
        return self._cache["episode_of_step"]

    @property
    def episode_terminated(self) -> np.ndarray:
        """(E,) True where the episode ended in a terminal state."""
        return self.terminations[self.offsets[1:] - 1]

    def returns_to_go(self, gamma: float = 1.0) -> np.ndarray:
        """(N,) return from each step to the end of its episode, computed once per gamma (float32)."""
        key = ("rtg", float(gamma))
        if key not in self._cache:
            self._cache[key] = returns_to_go(self.rewards, self.offsets, gamma).astype(np.float32)
        return self._cache[key]

    def observation_stats(self, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (float32, obs_dim) over all steps; std is at least ``eps``."""
        if "obs_stats" not in self._cache:
            if self.num_steps == 0:
                raise DatasetError(f"{self.name}: dataset is empty (0 steps)")
            # Accumulate in float64 without a float64 copy of the whole array.
            mean = self.observations.mean(axis=0, dtype=np.float64)
            var = np.zeros_like(mean)
            for lo in range(0, self.num_steps, 1 << 18):
                chunk = self.observations[lo:lo + (1 << 18)].astype(np.float64) - mean
                var += np.einsum("ij,ij->j", chunk, chunk)
            std = np.sqrt(var / self.num_steps)
            self._cache["obs_stats"] = (mean.astype(np.float32),
                                        np.maximum(std, eps).astype(np.float32))
        return self._cache["obs_stats"]

    # ------------------------------------------------------------------ selection
    def episode(self, index: int) -> dict[str, np.ndarray]:
        """Views of one episode's arrays."""
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range (0..{self.num_episodes - 1})")
        index %= self.num_episodes
        lo, hi = self.offsets[index], self.offsets[index + 1]
        out = {"observations": self.observations[lo:hi], "actions": self.actions[lo:hi],
               "rewards": self.rewards[lo:hi], "terminations": self.terminations[lo:hi],
               "truncations": self.truncations[lo:hi]}
        if self.next_observations is not None:
            out["next_observations"] = self.next_observations[lo:hi]
        return out

    def select_episodes(self, indices: Sequence[int] | np.ndarray, name: str | None = None
                        ) -> "TrajectoryDataset":
        """A new dataset holding the given episodes (in the given order), arrays copied."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.num_episodes):
            raise IndexError(f"episode index out of range (0..{self.num_episodes - 1})")
        lengths = self.episode_lengths[indices]
        starts = self.offsets[:-1][indices]
        # All selected step rows at once: start of each episode + position within it.
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + \
            np.arange(lengths.sum())
        return TrajectoryDataset(
            observations=self.observations[rows], actions=self.actions[rows],
            rewards=self.rewards[rows], terminations=self.terminations[rows],
            truncations=self.truncations[rows],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            next_observations=None if self.next_observations is None else self.next_observations[rows],
            infos={k: v[rows] for k, v in self.infos.items()},
            env_id=self.env_id, name=name or self.name, metadata=dict(self.metadata),
            episode_tasks=None if self.episode_tasks is None else self.episode_tasks[indices])

    def slice(self, start: int | None = None, stop: int | None = None) -> "TrajectoryDataset":
        """Episodes ``start:stop`` (Python slice semantics)."""
        return self.select_episodes(np.arange(self.num_episodes)[start:stop])

    def filter(self, keep: np.ndarray | Callable[["TrajectoryDataset"], np.ndarray]
               ) -> "TrajectoryDataset":
        """Episodes where ``keep`` is True; ``keep`` is an (E,) bool array or a function of the dataset
        returning one, e.g. ``ds.filter(lambda d: d.episode_lengths >= 100)``."""
        mask = np.asarray(keep(self) if callable(keep) else keep, dtype=bool)
        if mask.shape != (self.num_episodes,):
            raise ValueError(f"filter mask must have shape ({self.num_episodes},), got {mask.shape}")
        return self.select_episodes(np.flatnonzero(mask))

    def top_k(self, k: int) -> "TrajectoryDataset":
        """The ``k`` episodes with the highest return, best first (ties keep dataset order)."""
        order = np.argsort(-self.episode_returns, kind="stable")[:k]
        return self.select_episodes(order)

    @staticmethod
    def concatenate(datasets: Sequence["TrajectoryDataset"], name: str | None = None
                    ) -> "TrajectoryDataset":
        """Episodes of several datasets one after another (e.g. medium + expert)."""
        if not datasets:
            raise DatasetError("nothing to concatenate")
        first = datasets[0]
        for d in datasets[1:]:
            if (d.obs_dim, d.act_dim) != (first.obs_dim, first.act_dim):
                raise DatasetError(f"cannot concatenate {d.name} (obs {d.obs_dim}, act {d.act_dim}) "
                                   f"with {first.name} (obs {first.obs_dim}, act {first.act_dim})")
        has_next = all(d.next_observations is not None for d in datasets)
        has_tasks = all(d.episode_tasks is not None for d in datasets)
        info_keys = set.intersection(*(set(d.infos) for d in datasets))
        steps = np.cumsum([0] + [d.num_steps for d in datasets])
        return TrajectoryDataset(
            observations=np.concatenate([d.observations for d in datasets]),
            actions=np.concatenate([d.actions for d in datasets]),
            rewards=np.concatenate([d.rewards for d in datasets]),
            terminations=np.concatenate([d.terminations for d in datasets]),
            truncations=np.concatenate([d.truncations for d in datasets]),
            offsets=np.concatenate([[0]] + [d.offsets[1:] + s for d, s in zip(datasets, steps)]),
            next_observations=np.concatenate([d.next_observations for d in datasets]) if has_next else None,
            infos={k: np.concatenate([d.infos[k] for d in datasets]) for k in sorted(info_keys)},
            env_id=first.env_id if all(d.env_id == first.env_id for d in datasets) else None,
            name=name or "+".join(d.name for d in datasets),
            episode_tasks=np.concatenate([d.episode_tasks for d in datasets]) if has_tasks else None)

    # ------------------------------------------------------------------ memory
    @property
    def nbytes(self) -> int:
        """Bytes held by the step arrays, offsets and caches."""
        total = sum(a.nbytes for a in (self.observations, self.actions, self.rewards,
                                        self.terminations, self.truncations, self.offsets))
        if self.next_observations is not None:
            total += self.next_observations.nbytes
        total += sum(v.nbytes for v in self.infos.values())
        for v in self._cache.values():
            total += sum(a.nbytes for a in v) if isinstance(v, tuple) else v.nbytes
        return total

    def __repr__(self) -> str:
        return (f"TrajectoryDataset(name={self.name!r}, env_id={self.env_id!r}, "
                f"episodes={self.num_episodes}, steps={self.num_steps}, obs_dim={self.obs_dim}, "
                f"act_dim={self.act_dim})")


def first_nonfinite_row(arr: np.ndarray) -> int | None:
    """Index of the first row of ``arr`` with a NaN or inf, or None. Integer arrays are always finite."""
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    bad = ~np.isfinite(arr)
    if bad.ndim > 1:
        bad = bad.reshape(len(arr), -1).any(axis=1)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if len(hits) else None


def _as_2d(arr: Any, key: str, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 1:  # a scalar per step (e.g. a discrete action index) becomes one column
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DatasetError(f"{name}: '{key}' must be 2-D (steps, dim), got shape {arr.shape}")
    return arr
