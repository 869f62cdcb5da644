"""Ant-Dir behaviour from the single-task Ant actors: act in a frame turned to the task's direction.

The Ant's physics do not change when the world turns about the vertical axis, and its body looks the
same after a quarter turn with its legs renamed (leg 1 at 45 degrees takes leg 2's place at 135
degrees, and so on; each ankle's hinge axis turns with its leg, so an ankle angle keeps or flips its
sign). So an Ant asked to walk in direction theta is, up to these two symmetries, an Ant asked to walk
along +x, which is what the single-task Ant actors (``policies/ant``, trained on Ant-v5) do. The turned
actor

1. turns the world by -theta (torso orientation, linear velocity) so that the task's direction is +x,
2. renames the legs by the quarter turns k = round(theta / 90 degrees) mod 4, so that at the start of
   an episode (the Ant starts facing +x) the body looks at most 45 degrees away from the frame the
   actor was trained in,
3. asks the Ant actor, and maps its actions back to the physical legs.

It sees the observation (Ant-v5 without contact forces, 27 numbers) and the task vector (cos theta,
sin theta), like every family's privileged behaviour policy; the contact forces the Ant actors were
trained with are given as zeros (they are mostly zeros, and measured over 36 directions zeros did not
lower the return; see docs/meta.md). k is fixed by theta alone, so the policy has no state: choosing k
from the Ant's current heading instead made it switch legs within an episode and fall far more often.
"""

from __future__ import annotations

import numpy as np

from seqrl.policies.actor import Actor

# Ankle sign of legs 1-4 (qpos order): +1 where a positive angle bends the leg down. Renaming leg j as
# leg i multiplies its ankle angle (and torque) by ANKLE_SIGN[i] * ANKLE_SIGN[j].
ANKLE_SIGN = np.array([1.0, -1.0, -1.0, 1.0])
# Ant-v5's actuators in action order: (hip, ankle) of legs 4, 1, 2, 3 (0-based 3, 0, 1, 2).
ACTUATOR_LEG = np.array([3, 0, 1, 2])
CONTACT_DIMS = 78  # Ant-v5's clipped contact forces of 13 bodies (6 each), which the Ant actors read


def _quat_mul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamilton products of (B, 4) quaternions (w, x, y, z)."""
    w1, x1, y1, z1 = p.T
    w2, x2, y2, z2 = q.T
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=1)


def _yaw_quat(angle: np.ndarray) -> np.ndarray:
    zeros = np.zeros_like(angle)
    return np.stack([np.cos(angle / 2), zeros, zeros, np.sin(angle / 2)], axis=1)


def _rotate_xy(vec: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Turn the x, y components of (B, 3) vectors by ``angle`` (B,) about z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * vec[:, 0] - s * vec[:, 1], s * vec[:, 0] + c * vec[:, 1], vec[:, 2]], axis=1)


def quarter_turns(direction: np.ndarray) -> np.ndarray:
    """k = round(theta / 90 degrees) mod 4 for task vectors (B, 2) = (cos theta, sin theta)."""
    theta = np.mod(np.arctan2(direction[:, 1], direction[:, 0]), 2 * np.pi)
    return np.mod(np.rint(theta / (np.pi / 2)).astype(int), 4)


def turned_observation(obs: np.ndarray, direction: np.ndarray, k: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The Ant actor's input (B, 105) for Ant-Dir observations (B, 27) and task vectors (B, 2), and the
    quarter turns k (B,) used to rename the legs (default: ``quarter_turns(direction)``)."""
    theta = np.arctan2(direction[:, 1], direction[:, 0])
    k = quarter_turns(direction) if k is None else np.asarray(k)
    batch = np.arange(len(obs))[:, None]
    legs = (np.arange(4)[None, :] + k[:, None]) % 4           # (B, 4): leg that plays leg i's part
    sign = ANKLE_SIGN[None, :] * ANKLE_SIGN[legs]              # (B, 4)
    joints = obs[:, 5:13].reshape(-1, 4, 2)[batch, legs]       # (B, 4, 2) hip, ankle per renamed leg
    joint_vel = obs[:, 19:27].reshape(-1, 4, 2)[batch, legs]
    joints[:, :, 1] *= sign
    joint_vel[:, :, 1] *= sign
    # Torso orientation: world turned by -theta (left factor), body frame turned by k quarter turns
    # (right factor); q and -q are the same rotation, and the actors saw w >= 0.
    quat = _quat_mul(_quat_mul(_yaw_quat(-theta), obs[:, 1:5]), _yaw_quat(k * np.pi / 2))
    quat *= np.where(quat[:, :1] < 0, -1.0, 1.0)
    linear = _rotate_xy(obs[:, 13:16], -theta)                 # world-frame velocity
    angular = _rotate_xy(obs[:, 16:19], -k * np.pi / 2)        # body-frame angular velocity
    contacts = np.zeros((len(obs), CONTACT_DIMS))
    turned = np.concatenate([obs[:, :1], quat, joints.reshape(-1, 8), linear, angular,
                             joint_vel.reshape(-1, 8), contacts], axis=1)
    return turned.astype(np.float32), k


def unturned_action(action: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Map the Ant actor's actions (B, 8), given for renamed legs, back to the physical actuators."""
    per_leg = np.empty((len(action), 4, 2), action.dtype)     # (B, renamed leg, hip / ankle)
    per_leg[:, ACTUATOR_LEG] = action.reshape(-1, 4, 2)
    batch = np.arange(len(action))[:, None]
    physical = (np.arange(4)[None, :] + k[:, None]) % 4        # renamed leg i is physical leg (i + k) % 4
    sign = ANKLE_SIGN[None, :] * ANKLE_SIGN[physical]
    out = np.empty_like(per_leg)
    out[batch, physical, 0] = per_leg[:, :, 0]
    out[batch, physical, 1] = per_leg[:, :, 1] * sign
    return out[:, ACTUATOR_LEG].reshape(-1, 8)


class TurnedAntActor:
    """An Ant-v5 actor acting in Ant-Dir: observations (B, 27 + 2) -> actions (B, 8)."""

    def __init__(self, actor: Actor):
        self.actor = actor
        self.metadata = {**actor.metadata, "turned": True}

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None,
            deterministic: bool = False) -> np.ndarray:
        obs = np.asarray(obs, np.float64)
        turned, k = turned_observation(obs[:, :27], obs[:, 27:29])
        return unturned_action(self.actor.act(turned, rng, deterministic), k).astype(np.float32)
