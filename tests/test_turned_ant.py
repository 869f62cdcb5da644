"""Ant-Dir's behaviour policy: the single-task Ant actors in a frame turned to the task's direction.

Two facts make it work, and both are checked against MuJoCo here: the Ant's body looks the same after a
quarter turn with its legs renamed (ANKLE_SIGN and ACTUATOR_LEG must be right for that), and the turned
expert walks in every direction it is asked to.
"""

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from seqrl.data.meta_recipes import behaviour_actor
from seqrl.data.recipes import load_manifest
from seqrl.policies.turned_ant import (ANKLE_SIGN, ACTUATOR_LEG, quarter_turns, turned_observation,
                                       unturned_action)


def _yaw_quat(angle):
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def _quat_mul(p, q):
    w1, x1, y1, z1 = p
    w2, x2, y2, z2 = q
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def _renamed_state(qpos, qvel, k):
    """The same physical Ant described with its body frame turned by k quarter turns: leg i of the new
    description is leg (i + k) % 4 of the old one (slow reference code, one state)."""
    qpos2, qvel2 = qpos.copy(), qvel.copy()
    qpos2[3:7] = _quat_mul(qpos[3:7], _yaw_quat(k * np.pi / 2))
    c, s = np.cos(-k * np.pi / 2), np.sin(-k * np.pi / 2)
    qvel2[3:5] = [c * qvel[3] - s * qvel[4], s * qvel[3] + c * qvel[4]]   # body-frame angular velocity
    for i in range(4):
        j = (i + k) % 4
        sign = ANKLE_SIGN[i] * ANKLE_SIGN[j]
        qpos2[7 + 2 * i], qpos2[8 + 2 * i] = qpos[7 + 2 * j], sign * qpos[8 + 2 * j]
        qvel2[6 + 2 * i], qvel2[7 + 2 * i] = qvel[6 + 2 * j], sign * qvel[7 + 2 * j]
    return qpos2, qvel2


def _renamed_action(action, k):
    """Actuator vector for the renamed description that applies the same torques as ``action``."""
    out = np.empty(8)
    for slot, leg in enumerate(ACTUATOR_LEG):                 # new leg `leg` is old leg (leg + k) % 4
        old_slot = list(ACTUATOR_LEG).index((leg + k) % 4)
        sign = ANKLE_SIGN[leg] * ANKLE_SIGN[(leg + k) % 4]
        out[2 * slot], out[2 * slot + 1] = action[2 * old_slot], sign * action[2 * old_slot + 1]
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_quarter_turn_with_renamed_legs_is_the_same_ant(k):
    """Two simulations of one physical Ant, described with body frames k quarter turns apart, stay the
    same Ant: the same torso path and the same set of leg positions over 100 steps of random torques."""
    rng = np.random.default_rng(k)
    a, b = gym.make("Ant-v5").unwrapped, gym.make("Ant-v5").unwrapped
    a.reset(seed=k)
    for _ in range(20):                                          # a generic state, legs off their rest
        a.step(rng.uniform(-1, 1, 8))
    b.reset(seed=0)
    b.set_state(*_renamed_state(a.data.qpos.copy(), a.data.qvel.copy(), k))
    for step in range(100):
        for env in (a, b):                                       # positions of the current qpos
            mujoco.mj_kinematics(env.model, env.data)
        legs_a = np.sort(a.data.xpos[2:].round(6), axis=0)      # bodies after the torso, as a set
        legs_b = np.sort(b.data.xpos[2:].round(6), axis=0)
        np.testing.assert_allclose(legs_a, legs_b, atol=1e-4, err_msg=f"step {step}")
        np.testing.assert_allclose(a.data.qpos[:3], b.data.qpos[:3], atol=1e-4)
        action = rng.uniform(-1, 1, 8)
        a.step(action)
        b.step(_renamed_action(action, k))


def test_turning_by_zero_is_the_ant_v5_observation():
    """Direction 0 needs no turn: the actor reads Ant-v5's own observation (contact forces as zeros)."""
    env = gym.make("Ant-v5")
    obs, _ = env.reset(seed=3)
    ant_dir = gym.make("seqrl/AntDir-v0", angle=0.0)
    obs27, _ = ant_dir.reset(seed=3)
    turned, k = turned_observation(obs27[None].astype(np.float64), np.array([[1.0, 0.0]]))
    assert k[0] == 0 and turned.shape == (1, 105)
    np.testing.assert_allclose(turned[0, :27], obs[:27], atol=1e-6)
    assert np.all(turned[0, 27:] == 0)
    action = np.arange(8.0)[None]
    np.testing.assert_array_equal(unturned_action(action, k), action)


def test_quarter_turns_are_the_nearest_multiple_of_90_degrees():
    angles = np.radians([0, 44, 46, 90, 134, 136, 224, 226, 314, 316, 359])
    k = quarter_turns(np.stack([np.cos(angles), np.sin(angles)], axis=1))
    assert list(k) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 0, 0]


def test_the_turned_expert_walks_in_every_direction():
    """The shipped ant-dir expert moves along its task's direction in all eight compass directions
    (the Ant actor without the turn walks along +x whatever the task, and fails most of them)."""
    expert = behaviour_actor(load_manifest("ant-dir"), load_manifest("ant-dir")["expert"])
    rng = np.random.default_rng(0)
    speeds = []
    for angle in np.arange(8) * np.pi / 4:
        env = gym.make("seqrl/AntDir-v0", angle=angle)
        obs, _ = env.reset(seed=0)
        task = np.array([np.cos(angle), np.sin(angle)])
        along = []
        for _ in range(100):
            obs, _, terminated, _, info = env.step(expert.act(np.concatenate([obs, task])[None], rng)[0])
            along.append(task @ [info["x_velocity"], info["y_velocity"]])
            if terminated:
                break
        speeds.append(np.mean(along))
    assert np.median(speeds) > 2.0 and min(speeds) > 0.5, speeds
