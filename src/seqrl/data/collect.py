"""Collect a TrajectoryDataset by running a policy in several environment copies at once.

The policy is called once per step on the stacked observations of all copies (batched inference);
each copy runs its own episodes and resets itself when one ends. Finished episodes are appended in the
order they finish, which is deterministic for a given seed. A time limit ending an episode is recorded
as a truncation, a terminal state (a fall) as a termination. When the step budget is reached, episodes
still running are cut and kept, marked truncated, so the dataset holds exactly ``steps`` steps.

Memory: each copy writes into its own preallocated episode buffer; a finished episode is copied once
into the preallocated output arrays, so collecting N steps holds about two N-step datasets at most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from seqrl.data.trajectories import TrajectoryDataset

if TYPE_CHECKING:
    import gymnasium as gym

Policy = Callable[[np.ndarray], np.ndarray]  # (num_envs, obs_dim) -> (num_envs, act_dim)


class _Buffers:
    """Preallocated step arrays; ``append`` copies a block of rows to the end."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, bool)
        self.trunc = np.zeros(capacity, bool)
        self.size = 0

    def grow(self) -> None:
        for name in ("obs", "next_obs", "act", "rew", "term", "trunc"):
            arr = getattr(self, name)
            setattr(self, name, np.concatenate([arr, np.zeros_like(arr)]))

    def append(self, other: "_Buffers", count: int) -> None:
        lo, hi = self.size, self.size + count
        for name in ("obs", "next_obs", "act", "rew", "term", "trunc"):
            getattr(self, name)[lo:hi] = getattr(other, name)[:count]
        self.size = hi


def collect(env: str, policy: Policy, steps: int, num_envs: int = 8, seed: int = 0,
            progress: Callable[[int], None] | None = None, name: str | None = None,
            make: Callable[[], "gym.Env"] | None = None) -> TrajectoryDataset:
    """Run ``policy`` for ``steps`` environment steps in ``num_envs`` copies of ``env``.

    Copy i is reset first with seed ``seed + i``, later with its own generator. ``progress`` is called
    with the number of new steps after every batched step. ``make`` builds one copy when the copies
    need more than the environment's name (e.g. a meta-RL task's parameters).
    """
    from seqrl.envs.registry import gym_id, make_env

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    num_envs = max(1, min(num_envs, steps))
    envs = [make() if make is not None else make_env(env) for _ in range(num_envs)]
    obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
    horizon = envs[0].spec.max_episode_steps or 1000
    running = [_Buffers(min(horizon, steps), obs_dim, act_dim) for _ in range(num_envs)]
    out = _Buffers(steps, obs_dim, act_dim)
    lengths: list[int] = []
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]).astype(np.float32)
    # One BLAS thread: the arrays then do not depend on the machine's BLAS thread count (1 and 2 threads
    # gave different hashes), and the tiny (num_envs x 256) products no longer wait on a second thread
    # when the other core is busy: within 20% either way idle, 1.5x to 36x faster under load in three
    # runs of benchmarks/blas_threads.py (results/blas_threads.md).
    with threadpool_limits(limits=1):
        total = 0  # steps collected, finished or running
        while total < steps:
            before = total
            actions = np.asarray(policy(obs), dtype=np.float32).reshape(num_envs, act_dim)
            for i, e in enumerate(envs):
                if total >= steps:
                    break
                next_obs, reward, terminated, truncated, _ = e.step(actions[i])
                ep = running[i]
                if ep.size == len(ep.rew):  # an episode longer than the time limit (no limit set)
                    ep.grow()
                t = ep.size
                ep.obs[t], ep.act[t], ep.rew[t], ep.next_obs[t] = obs[i], actions[i], reward, next_obs
                ep.term[t], ep.trunc[t] = terminated, truncated and not terminated
                ep.size += 1
                total += 1
                if terminated or truncated:
                    out.append(ep, ep.size)
                    lengths.append(ep.size)
                    ep.size = 0
                    next_obs, _ = e.reset()
                obs[i] = next_obs
            if progress is not None:
                progress(total - before)
    for ep in running:  # cut episodes: kept, marked truncated
        if ep.size:
            ep.trunc[ep.size - 1] = True
            out.append(ep, ep.size)
            lengths.append(ep.size)
    for e in envs:
        e.close()
    return TrajectoryDataset(
        observations=out.obs, actions=out.act, rewards=out.rew, terminations=out.term,
        truncations=out.trunc, offsets=np.concatenate([[0], np.cumsum(lengths)]),
        next_observations=out.next_obs, env_id=gym_id(env), name=name or f"{env}-collected")


def random_policy(env: str, seed: int = 0) -> Policy:
    """Uniform random actions within the environment's action bounds, from a seeded generator."""
    from seqrl.envs.registry import make_env

    instance = make_env(env)
    low, high = instance.action_space.low, instance.action_space.high
    instance.close()
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(low, high, size=(len(obs), len(low))).astype(np.float32)
