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
  the observation (index 8, the mean of before and after the step), so v is exact.
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
        self.params = {t: family.kwargs(t) for t in range(len(family.tasks))}
        env = family.env
        if env == "PointRobot":
            self.position = obs[:, :2] + 0.1 * np.clip(actions[:, :2], -1.0, 1.0)
        elif env == "HalfCheetahVel":
            self.control = _control_cost(actions, 0.05)
            gap = np.maximum(-(rewards + self.control), 0.0)                      # |v - v*|
            target = np.array([self.params[t]["velocity"] for t in task_of_row])
            seen = 0.5 * (obs[:, 8] + obs[following, 8])
            self.velocity = np.where(np.abs(target + gap - seen) <= np.abs(target - gap - seen),
                                     target + gap, target - gap)
        elif env == "HalfCheetahDir":
            self.control = _control_cost(actions, 0.05)
            direction = np.array([self.params[t]["direction"] for t in task_of_row])
            self.velocity = (rewards + self.control) / direction
        else:  # AntDir
            self.velocity_xy = 0.5 * (obs[:, 13:15] + obs[following, 13:15])
            self.rest = rewards - (self.velocity_xy * self._directions(task_of_row)).sum(axis=1)

    def _directions(self, tasks: np.ndarray) -> np.ndarray:
        angles = np.array([self.params[int(t)]["angle"] for t in np.ravel(tasks)]).reshape(np.shape(tasks))
        return np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    def rewards(self, rows: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Rewards (float32, environment units) of dataset ``rows`` in ``tasks`` (broadcast to rows)."""
        rows = np.asarray(rows, np.int64)
        tasks = np.broadcast_to(np.asarray(tasks, np.int64), rows.shape)
        env = self.family.env
        if env == "PointRobot":
            goals = np.array([self.params[int(t)]["goal"] for t in tasks.ravel()], np.float64)
            distance = np.linalg.norm(self.position[rows.ravel()] - goals, axis=1).reshape(rows.shape)
            if self.params[int(tasks.flat[0])].get("sparse", False):
                radius = self.params[int(tasks.flat[0])].get("goal_radius", 0.2)
                out = np.where(distance <= radius, 1.0 - distance, 0.0)
            else:
                out = -distance
        elif env == "HalfCheetahVel":
            targets = np.array([self.params[int(t)]["velocity"] for t in tasks.ravel()]).reshape(rows.shape)
            out = -np.abs(self.velocity[rows] - targets) - self.control[rows]
        elif env == "HalfCheetahDir":
            directions = np.array([self.params[int(t)]["direction"] for t in tasks.ravel()]).reshape(rows.shape)
            out = directions * self.velocity[rows] - self.control[rows]
        else:
            out = self.rest[rows] + (self.velocity_xy[rows] * self._directions(tasks)).sum(axis=-1)
        return out.astype(np.float32)
