"""A multi-task dataset's rewards recomputed as if its steps had been taken in another task.

In a task family whose tasks differ in the reward only (cheetah-vel, cheetah-dir, ant-dir,
ant-fwd-back, point-robot), a step (s, a, s') is a valid step of every task; only its reward changes.
Training a task encoder on such relabelled steps (the behaviour of one task with the rewards of another)
stops it from naming the task by the behaviour that tends to come with it in the data, which a policy's
own early episodes in an unseen task do not share: BOReL's reward relabelling against "MDP ambiguity"
(Dorfman, Shenfeld and Tamar, NeurIPS 2021) and CORRO's relabelled contrastive pairs (Yuan and Lu,
ICML 2022). Families whose tasks change the dynamics (hopper-params, walker-params) cannot be relabelled.

What each family's reward needs from a step, read from the dataset (observations are the states the
actions were taken in; an episode's last step has no next observation, so it uses its own):

* point-robot: the position after the step, s + 0.1 clip(a) (exact); dense -|p' - g| or sparse.
* cheetah-vel: r = -|v - v*| - 0.05 |a|^2 gives |v - v*|; the sign comes from the root's x velocity in
  the observation (index 8, the mean of before and after the step), so v is exact unless |v - v*| is
  below that estimate's error, when the new reward can be off by up to 2 |v - v*|.
* cheetah-dir: r = d v - 0.05 |a|^2 gives v exactly.
* ant-dir / ant-fwd-back: r = cos(th) v_x + sin(th) v_y + the rest (survival, control, contact), with
  (v_x, v_y) the torso velocity, which the observation only gives at the step's ends (indices 13 and
  14, their mean); the rest is kept, so the new reward is exact up to that estimate's error in the
  change of the direction term (for random actions about a tenth of the change the relabelling makes).
"""

from __future__ import annotations

import numpy as np

from seqrl.errors import ConfigError

RELABELLED = ("PointRobot", "HalfCheetahVel", "HalfCheetahDir", "AntDir")


def can_relabel(family) -> bool:
    return family.env in RELABELLED


def _control_cost(actions: np.ndarray, weight: float) -> np.ndarray:
    return weight * np.square(np.clip(actions, -1.0, 1.0)).sum(axis=1)


class RewardRelabeller:
    """``rewards(rows, tasks)``: the rewards of dataset rows ``rows`` had they been earned in ``tasks``.

    ``dataset`` needs ``observations`` (N, obs_dim), ``actions`` (N, act_dim), ``rewards`` (N,),
    ``offsets`` (E+1,) and ``episode_tasks`` (E,) task ids of ``family``.
    """

    def __init__(self, family, dataset):
        if not can_relabel(family):
            raise ConfigError(f"{family.name}'s tasks differ in their dynamics, not only their rewards: "
                              "its steps cannot be relabelled for another task")
        self.family = family
        obs = np.asarray(dataset.observations, np.float64)
        actions = np.asarray(dataset.actions, np.float64)
        rewards = np.asarray(dataset.rewards, np.float64)
        offsets = np.asarray(dataset.offsets, np.int64)
        lengths = np.diff(offsets)
        task_of_row = np.repeat(np.asarray(dataset.episode_tasks, np.int64), lengths)
        last = np.zeros(len(rewards), bool)
        last[offsets[1:] - 1] = True
        following = np.where(last, np.arange(len(rewards)), np.arange(len(rewards)) + 1)
        following = np.minimum(following, len(rewards) - 1)
        params = [family.kwargs(t) for t in range(len(family.tasks))]
        env = family.env
        # each task's reward parameter, indexed by task id
        if env == "PointRobot":
            self.goals = np.array([p["goal"] for p in params], np.float64)             # (T, 2)
            self.sparse = bool(params[0].get("sparse", False))
            self.radius = float(params[0].get("goal_radius", 0.2))
            self.position = obs[:, :2] + 0.1 * np.clip(actions[:, :2], -1.0, 1.0)
        elif env == "HalfCheetahVel":
            self.targets = np.array([p["velocity"] for p in params], np.float64)       # (T,)
            self.control = _control_cost(actions, 0.05)
            gap = np.maximum(-(rewards + self.control), 0.0)                            # |v - v*|
            target = self.targets[task_of_row]
            seen = 0.5 * (obs[:, 8] + obs[following, 8])
            self.velocity = np.where(np.abs(target + gap - seen) <= np.abs(target - gap - seen),
                                     target + gap, target - gap)
        elif env == "HalfCheetahDir":
            self.directions = np.array([p["direction"] for p in params], np.float64)   # (T,)
            self.control = _control_cost(actions, 0.05)
            self.velocity = (rewards + self.control) / self.directions[task_of_row]
        else:  # AntDir
            angles = np.array([p["angle"] for p in params], np.float64)
            self.directions = np.stack([np.cos(angles), np.sin(angles)], axis=1)       # (T, 2)
            self.velocity_xy = 0.5 * (obs[:, 13:15] + obs[following, 13:15])
            self.rest = rewards - (self.velocity_xy * self.directions[task_of_row]).sum(axis=1)

    def rewards(self, rows: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Rewards (float32, environment units) of dataset ``rows`` in ``tasks`` (broadcast to rows)."""
        rows = np.asarray(rows, np.int64)
        tasks = np.broadcast_to(np.asarray(tasks, np.int64), rows.shape)
        env = self.family.env
        if env == "PointRobot":
            distance = np.linalg.norm(self.position[rows] - self.goals[tasks], axis=-1)
            out = np.where(distance <= self.radius, 1.0 - distance, 0.0) if self.sparse else -distance
        elif env == "HalfCheetahVel":
            out = -np.abs(self.velocity[rows] - self.targets[tasks]) - self.control[rows]
        elif env == "HalfCheetahDir":
            out = self.directions[tasks] * self.velocity[rows] - self.control[rows]
        else:
            out = self.rest[rows] + (self.velocity_xy[rows] * self.directions[tasks]).sum(axis=-1)
        return out.astype(np.float32)
