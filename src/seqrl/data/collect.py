"""Collect a TrajectoryDataset by running a policy in several environment copies at once.

The policy is called once per step on the stacked observations of all copies (batched inference);
each copy runs its own episodes and resets itself when one ends. Finished episodes are appended in the
order they finish, which is deterministic for a given seed. A time limit ending an episode is recorded
as a truncation, a terminal state (a fall) as a termination. When the step budget is reached, episodes
still running are cut and kept, marked truncated, so the dataset holds exactly ``steps`` steps.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from seqrl.data.trajectories import TrajectoryDataset

Policy = Callable[[np.ndarray], np.ndarray]  # (num_envs, obs_dim) -> (num_envs, act_dim)


def collect(env: str, policy: Policy, steps: int, num_envs: int = 8, seed: int = 0,
            progress: Callable[[int], None] | None = None, name: str | None = None
            ) -> TrajectoryDataset:
    """Run ``policy`` for ``steps`` environment steps in ``num_envs`` copies of ``env``.

    Copy i is reset first with seed ``seed + i``, later with its own generator. ``progress`` is called
    with the number of new steps after every batched step.
    """
    from seqrl.envs.registry import gym_id, make_env

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    num_envs = max(1, min(num_envs, steps))
    envs = [make_env(env) for _ in range(num_envs)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    running: list[dict[str, list]] = [_new_episode() for _ in range(num_envs)]
    finished: list[dict[str, np.ndarray]] = []
    total = 0  # steps collected, finished or running
    while total < steps:
        before = total
        actions = np.asarray(policy(obs), dtype=np.float32).reshape(num_envs, -1)
        for i, e in enumerate(envs):
            if total >= steps:
                break
            next_obs, reward, terminated, truncated, _ = e.step(actions[i])
            ep = running[i]
            ep["observations"].append(obs[i].copy())  # obs[i] is overwritten below
            ep["actions"].append(actions[i])
            ep["rewards"].append(reward)
            ep["terminations"].append(terminated)
            ep["truncations"].append(truncated and not terminated)
            ep["next_observations"].append(next_obs)
            total += 1
            if terminated or truncated:
                finished.append(_stack(ep))
                running[i] = _new_episode()
                next_obs, _ = e.reset()
            obs[i] = next_obs
        if progress is not None:
            progress(total - before)
    for ep in running:  # cut episodes: kept, marked truncated
        if ep["rewards"]:
            ep["truncations"][-1] = True
            finished.append(_stack(ep))
    for e in envs:
        e.close()
    keys = ("observations", "actions", "rewards", "terminations", "truncations", "next_observations")
    merged = {k: np.concatenate([ep[k] for ep in finished]) for k in keys}
    lengths = [len(ep["rewards"]) for ep in finished]
    return TrajectoryDataset(
        observations=merged["observations"].astype(np.float32),
        actions=merged["actions"], rewards=merged["rewards"].astype(np.float32),
        terminations=merged["terminations"], truncations=merged["truncations"],
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        next_observations=merged["next_observations"].astype(np.float32),
        env_id=gym_id(env), name=name or f"{env}-collected")


def random_policy(env: str, seed: int = 0) -> Policy:
    """Uniform random actions within the environment's action bounds, from a seeded generator."""
    from seqrl.envs.registry import make_env

    instance = make_env(env)
    low, high = instance.action_space.low, instance.action_space.high
    instance.close()
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(low, high, size=(len(obs), len(low))).astype(np.float32)


def _new_episode() -> dict[str, list]:
    return {k: [] for k in ("observations", "actions", "rewards", "terminations", "truncations",
                            "next_observations")}


def _stack(ep: dict[str, list]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in ep.items()}
