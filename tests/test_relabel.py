"""Reward relabelling across the tasks of a family (seqrl.envs.relabel): steps taken in one task, scored
as the environment of another task scores them."""

from types import SimpleNamespace

import numpy as np
import pytest

from seqrl.envs.relabel import RewardRelabeller, can_relabel
from seqrl.envs.tasks import get_family
from seqrl.errors import ConfigError


def rollout(family, task: int, other: int, steps: int = 60, cut: int = 25, seed: int = 0):
    """Random-action steps (point-robot: towards the goal) in ``task`` cut into episodes of ``cut`` steps, and what each step would have
    earned in ``other`` (computed from the environment's own info, not from the observations)."""
    env, judge = family.make(task), family.make(other).unwrapped
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = {"observations": [], "actions": [], "rewards": []}
    in_other = []
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        if family.env == "PointRobot":   # head for the goal, so that sparse rewards come too
            action = np.clip(10 * (env.unwrapped.goal - obs) + 0.3 * action, -1, 1).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        rows["observations"].append(obs)
        rows["actions"].append(action)
        rows["rewards"].append(reward)
        if family.env == "PointRobot":
            in_other.append(_point_reward(judge, next_obs))
        elif family.env == "HalfCheetahVel":
            in_other.append(-abs(info["x_velocity"] - judge.velocity) - 0.05 * np.sum(action ** 2))
        elif family.env == "HalfCheetahDir":
            in_other.append(judge.direction * info["x_velocity"] - 0.05 * np.sum(action ** 2))
        else:
            along_then = np.cos(env.unwrapped.angle) * info["x_velocity"] + np.sin(env.unwrapped.angle) * info["y_velocity"]
            along_now = np.cos(judge.angle) * info["x_velocity"] + np.sin(judge.angle) * info["y_velocity"]
            in_other.append(reward - along_then + along_now)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    offsets = np.r_[np.arange(0, steps, cut), steps]
    data = SimpleNamespace(**{k: np.asarray(v, np.float32) for k, v in rows.items()}, offsets=offsets,
                           episode_tasks=np.full(len(offsets) - 1, task))
    return data, np.asarray(in_other)


def _point_reward(env, position):
    distance = float(np.linalg.norm(position - env.goal))
    if env.sparse:
        return 1.0 - distance if distance <= env.goal_radius else 0.0
    return -distance


@pytest.mark.parametrize("name, tolerance", [("point-robot", 1e-5), ("point-robot-sparse", 1e-5),
                                             ("cheetah-vel", 0.01), ("cheetah-dir", 1e-4),
                                             ("ant-dir", None)])
def test_relabelled_rewards_match_what_the_other_task_pays(name, tolerance):
    family = get_family(name)
    task, other = family.train_ids[0], family.train_ids[1]
    data, in_other = rollout(family, task, other)
    relabel = RewardRelabeller(family, data)
    rows = np.arange(len(data.rewards))
    # the step's own task gives back the recorded rewards
    np.testing.assert_allclose(relabel.rewards(rows, task), data.rewards, atol=1e-4)
    new = relabel.rewards(rows, other)
    assert not np.allclose(new, data.rewards)
    error = np.abs(new - in_other).mean()
    if tolerance is None:  # ant-dir: the torso velocity is estimated; a tenth of the change or so
        assert error <= 0.2 * np.abs(data.rewards - in_other).mean()
    else:
        assert error <= tolerance
    if name == "cheetah-vel":  # |v - v*| is exact; only its sign can be wrong, when |v - v*| is tiny
        gap = -(data.rewards + 0.05 * np.square(data.actions).sum(1))
        assert np.all(np.abs(new - in_other) <= 2 * gap + 1e-4)
    # a (B, L) block of rows with one task per row
    block = relabel.rewards(rows[:40].reshape(2, 20), np.array([[task], [other]]))
    np.testing.assert_allclose(block[1], new[20:40], atol=1e-6)


def test_families_that_change_the_dynamics_cannot_be_relabelled():
    family = get_family("hopper-params")
    assert not can_relabel(family) and can_relabel(get_family("cheetah-vel"))
    data = SimpleNamespace(observations=np.zeros((2, 11)), actions=np.zeros((2, 3)), rewards=np.zeros(2),
                           offsets=np.array([0, 2]), episode_tasks=np.array([0]))
    with pytest.raises(ConfigError, match="dynamics"):
        RewardRelabeller(family, data)
