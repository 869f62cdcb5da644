"""Task families for meta-RL: fixed splits, hidden tasks, the rewards and physics they promise."""

import gymnasium as gym
import numpy as np
import pytest

from seqrl.envs.tasks import FAMILIES, get_family
from seqrl.errors import UnknownNameError


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_splits_are_fixed_and_disjoint(name):
    family = FAMILIES[name]
    fresh = family.sample(np.random.default_rng(family.seed), len(family.tasks))
    assert fresh == family.tasks                       # drawn from the family's own seed, every time
    train, test = set(family.train_ids), set(family.test_ids)
    assert len(train) == family.num_train
    if family.shared_tasks:
        assert test == train
    else:
        assert len(test) == family.num_test and not train & test
        train_kwargs = [family.kwargs(i) for i in family.train_ids]
        assert all(family.kwargs(i) not in train_kwargs for i in family.test_ids)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_task_is_hidden_from_the_observation(name):
    family = FAMILIES[name]
    a, b = family.train_ids[0], family.test_ids[-1]
    env_a, env_b = family.make(a), family.make(b)
    obs_a, _ = env_a.reset(seed=3)
    obs_b, _ = env_b.reset(seed=3)
    assert env_a.observation_space == env_b.observation_space
    np.testing.assert_array_equal(obs_a, obs_b)       # same seed, different task: same first observation
    assert not np.array_equal(env_a.unwrapped.task_vector(), env_b.unwrapped.task_vector())
    assert env_a.spec.max_episode_steps == family.episode_steps


def test_cheetah_vel_reward_matches_its_definition():
    family = get_family("cheetah-vel")
    env = family.make(0, seed=0)
    target = family.kwargs(0)["velocity"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, size=6).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        assert reward == pytest.approx(-abs(info["x_velocity"] - target) - 0.05 * np.sum(action ** 2))


def test_ant_dir_rewards_the_velocity_along_the_direction():
    env = get_family("ant-fwd-back").make(1, seed=0)   # direction pi: backwards
    action = np.zeros(8, np.float32)
    _, reward, _, _, info = env.step(action)
    assert reward == pytest.approx(-info["x_velocity"] + info["reward_survive"] + info["reward_ctrl"]
                                   + info["reward_contact"], abs=1e-6)


def test_params_family_scales_the_physics():
    family = get_family("walker-params")
    plain = gym.make("Walker2d-v5").unwrapped.model
    scaled = family.make(3).unwrapped.model
    exponents = np.asarray(family.kwargs(3)["mass"])
    np.testing.assert_allclose(scaled.body_mass, plain.body_mass * 1.5 ** exponents)
    np.testing.assert_allclose(scaled.dof_damping,
                               plain.dof_damping * 1.3 ** np.asarray(family.kwargs(3)["damping"]))
    assert np.all(np.abs(exponents) <= 3)


def test_point_robot_moves_and_rewards():
    family = get_family("point-robot")
    goal = np.asarray(family.kwargs(0)["goal"])
    env = family.make(0, seed=0)
    obs, reward, *_ = env.step(np.array([1.0, 0.5], np.float32))
    np.testing.assert_allclose(obs, [0.1, 0.05], atol=1e-7)
    assert reward == pytest.approx(-np.linalg.norm(obs - goal), abs=1e-6)

    sparse = get_family("point-robot-sparse").make(0, seed=0)
    steps = 0
    position = np.zeros(2)
    while np.linalg.norm(position - goal) > 0.15:      # walk straight to the goal
        step = np.clip((goal - position) / 0.1, -1, 1)
        position = sparse.step(step.astype(np.float32))[0]
        steps += 1
    _, reward, *_ = sparse.step(np.zeros(2, np.float32))
    assert steps <= 20 and reward > 0.8
    far, reward, *_ = get_family("point-robot-sparse").make(0, seed=0).step(np.zeros(2, np.float32))
    assert reward == 0.0


def test_registered_ids_and_errors():
    import seqrl.envs.tasks  # noqa: F401

    env = gym.make("seqrl/HalfCheetahVel-v0", velocity=2.0)
    assert env.unwrapped.velocity == 2.0 and env.spec.max_episode_steps == 200
    with pytest.raises(UnknownNameError):
        get_family("cheetah-speed")
    with pytest.raises(UnknownNameError):
        get_family("cheetah-vel").kwargs(40)
