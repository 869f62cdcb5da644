"""Task families for offline meta-RL: gymnasium environments whose task is hidden from the observation.

A family is a set of tasks that share states and actions and differ in the reward or the physics; the
agent must infer the task from experience (CMT, seeds/000, Section 4.2). Each task is a gymnasium
environment registered under the ``seqrl/`` namespace with the task as keyword arguments, so users can
also write ``gym.make("seqrl/HalfCheetahVel-v0", velocity=1.5)`` after ``import seqrl.envs.tasks``.

Families (rewards as in PEARL, Rakelly et al., 2019, and its successors FOCAL and Prompt-DT):

  point-robot         2-D point, start at the origin, goal on the unit upper half-circle, 20 steps;
                      reward -||p - g||; actions in [-1, 1]^2 move the point by 0.1 per unit
  point-robot-sparse  the same goals; reward 1 - ||p - g|| within 0.2 of the goal, else 0
  cheetah-vel         HalfCheetah, target velocity v* ~ U(0, 3); reward -|v - v*| - 0.05 ||a||^2
  cheetah-dir         HalfCheetah, direction d in {+1, -1}; reward d v - 0.05 ||a||^2
  ant-fwd-back        Ant, direction 0 or pi; reward: velocity along it + Ant-v5's survive, control and
                      contact terms
  ant-dir             Ant, direction ~ U[0, 2 pi), reward as ant-fwd-back
  hopper-params       Hopper with each body mass and inertia scaled by 1.5^U(-3,3), each joint damping
  walker-params       by 1.3^U(-3,3) and each geom friction by 1.5^U(-3,3) (the rand_param_envs
                      scheme); Hopper-v5 / Walker2d-v5's own reward

MuJoCo families run 200-step episodes (as PEARL and FOCAL); Ant observes its 27 position and velocity
coordinates (Ant-v5 without the contact forces, which are mostly zeros and would quadruple the input).

Splits are fixed: a family's tasks are drawn once from the family's own seed, the first ``num_train``
are the training tasks and the rest the held-out test tasks. The two-task direction families have no
held-out task: train and test are the same two tasks (as in the CMT and Prompt-DT papers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

import gymnasium as gym

from seqrl.errors import UnknownNameError

EPISODE_STEPS = 200
POINT_EPISODE_STEPS = 20

# ---------------------------------------------------------------------------------------- environments


def _control_cost(env, action, weight: float) -> float:
    a = np.clip(action, env.action_space.low, env.action_space.high)
    return weight * float(np.sum(np.square(a)))


def _define_envs():
    """Define the environment classes (needs gymnasium and MuJoCo's gymnasium environments)."""
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    class PointRobot(gym.Env):
        """A point in the plane that must reach a hidden goal (PEARL's point-robot)."""

        metadata = {"render_modes": []}

        def __init__(self, goal=(1.0, 0.0), sparse: bool = False, goal_radius: float = 0.2):
            self.set_task(goal)
            self.sparse, self.goal_radius = sparse, goal_radius
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
            self.position = np.zeros(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.position = np.zeros(2)
            return self.position.astype(np.float32), {}

        def step(self, action):
            self.position = self.position + 0.1 * np.clip(action, -1.0, 1.0)
            distance = float(np.linalg.norm(self.position - self.goal))
            if self.sparse:
                reward = 1.0 - distance if distance <= self.goal_radius else 0.0
            else:
                reward = -distance
            return self.position.astype(np.float32), reward, False, False, {"distance": distance}

        def set_task(self, goal) -> None:
            self.goal = np.asarray(goal, dtype=np.float64)

        def task_vector(self) -> np.ndarray:
            return self.goal.astype(np.float32)

    class HalfCheetahVel(HalfCheetahEnv):
        def __init__(self, velocity: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.set_task(velocity)

        def set_task(self, velocity: float) -> None:
            self.velocity = float(velocity)

        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            reward = -abs(info["x_velocity"] - self.velocity) - _control_cost(self, action, 0.05)
            return obs, reward, terminated, truncated, info

        def task_vector(self) -> np.ndarray:
            return np.array([self.velocity], np.float32)

    class HalfCheetahDir(HalfCheetahEnv):
        def __init__(self, direction: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.set_task(direction)

        def set_task(self, direction: float) -> None:
            self.direction = float(direction)

        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            reward = self.direction * info["x_velocity"] - _control_cost(self, action, 0.05)
            return obs, reward, terminated, truncated, info

        def task_vector(self) -> np.ndarray:
            return np.array([self.direction], np.float32)

    class AntDir(AntEnv):
        def __init__(self, angle: float = 0.0, **kwargs):
            kwargs.setdefault("include_cfrc_ext_in_observation", False)
            super().__init__(**kwargs)
            self.set_task(angle)

        def set_task(self, angle: float) -> None:
            self.angle = float(angle)

        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            along = np.cos(self.angle) * info["x_velocity"] + np.sin(self.angle) * info["y_velocity"]
            reward = along + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
            return obs, float(reward), terminated, truncated, info

        def task_vector(self) -> np.ndarray:
            return np.array([np.cos(self.angle), np.sin(self.angle)], np.float32)

    def params_class(base):
        class Params(base):
            """``base`` with its physics scaled: factors are base ** exponent, element by element."""

            fields = ("body_mass", "body_inertia", "dof_damping", "geom_friction")

            def __init__(self, mass=None, inertia=None, damping=None, friction=None, **kwargs):
                super().__init__(**kwargs)
                self.original = {f: getattr(self.model, f).copy() for f in self.fields}
                self.set_task(mass, inertia, damping, friction)

            def set_task(self, mass=None, inertia=None, damping=None, friction=None) -> None:
                self.exponents = {}
                for field, values in zip(self.fields, (mass, inertia, damping, friction)):
                    shape = self.original[field].shape
                    e = np.zeros(shape) if values is None else np.asarray(values, np.float64)
                    if e.shape != shape:
                        raise ValueError(f"{field} exponents must have shape {shape}, got {e.shape}")
                    base_factor = 1.3 if field == "dof_damping" else 1.5
                    getattr(self.model, field)[:] = self.original[field] * base_factor ** e
                    self.exponents[field] = e

            def task_vector(self) -> np.ndarray:
                return np.concatenate([e.ravel() for e in self.exponents.values()]).astype(np.float32)

        Params.__name__ = Params.__qualname__ = base.__name__.replace("Env", "") + "Params"
        return Params

    return {"PointRobot": PointRobot, "HalfCheetahVel": HalfCheetahVel, "HalfCheetahDir": HalfCheetahDir,
            "AntDir": AntDir, "HopperParams": params_class(HopperEnv),
            "Walker2dParams": params_class(Walker2dEnv)}


_CLASSES: dict | None = None


def env_class(name: str):
    """The environment class ``name`` (e.g. ``HalfCheetahVel``)."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _define_envs()
    return _CLASSES[name]


# gymnasium entry points (module-level names, so that env specs serialise, e.g. into Minari datasets)
def point_robot(**kwargs):
    return env_class("PointRobot")(**kwargs)


def half_cheetah_vel(**kwargs):
    return env_class("HalfCheetahVel")(**kwargs)


def half_cheetah_dir(**kwargs):
    return env_class("HalfCheetahDir")(**kwargs)


def ant_dir(**kwargs):
    return env_class("AntDir")(**kwargs)


def hopper_params(**kwargs):
    return env_class("HopperParams")(**kwargs)


def walker2d_params(**kwargs):
    return env_class("Walker2dParams")(**kwargs)


# class name -> (gymnasium id, time limit, entry point)
GYM_IDS = {"PointRobot": ("seqrl/PointRobot-v0", POINT_EPISODE_STEPS, "point_robot"),
           "HalfCheetahVel": ("seqrl/HalfCheetahVel-v0", EPISODE_STEPS, "half_cheetah_vel"),
           "HalfCheetahDir": ("seqrl/HalfCheetahDir-v0", EPISODE_STEPS, "half_cheetah_dir"),
           "AntDir": ("seqrl/AntDir-v0", EPISODE_STEPS, "ant_dir"),
           "HopperParams": ("seqrl/HopperParams-v0", EPISODE_STEPS, "hopper_params"),
           "Walker2dParams": ("seqrl/Walker2dParams-v0", EPISODE_STEPS, "walker2d_params")}


def register_envs() -> None:
    """Register the task environments with gymnasium (idempotent)."""
    for env_id, steps, entry in GYM_IDS.values():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=f"seqrl.envs.tasks:{entry}", max_episode_steps=steps)


# -------------------------------------------------------------------------------------------- families


def _shapes(env: str) -> dict[str, tuple]:
    """Shapes of the physics arrays a params family scales (read from a throwaway instance)."""
    m = gym.make(env).unwrapped.model
    return {"mass": m.body_mass.shape, "inertia": m.body_inertia.shape, "damping": m.dof_damping.shape,
            "friction": m.geom_friction.shape}


def _params_sampler(env: str):
    def sample(rng: np.random.Generator, n: int) -> list[dict]:
        shapes = _shapes(env)
        return [{key: rng.uniform(-3.0, 3.0, size=shape).tolist() for key, shape in shapes.items()}
                for _ in range(n)]
    return sample


def _half_circle_goals(rng: np.random.Generator, n: int) -> list[dict]:
    angles = rng.uniform(0.0, np.pi, size=n)
    return [{"goal": [float(np.cos(a)), float(np.sin(a))]} for a in angles]


@dataclass(frozen=True)
class TaskFamily:
    """A named set of tasks with a fixed train/test split.

    ``sample(rng, n)`` draws the keyword arguments of n tasks; tasks are drawn once from ``seed``. When
    ``shared_tasks`` is true (two-task families) the test tasks are the training tasks.
    """

    name: str
    env: str                       # key of GYM_IDS
    num_train: int
    num_test: int
    sample: Callable[[np.random.Generator, int], list[dict]]
    seed: int
    fixed_kwargs: tuple = ()       # extra keyword arguments for every task (e.g. sparse rewards)
    shared_tasks: bool = False
    description: str = ""
    behaviour: str | None = None   # the family whose behaviour policies this one uses (default: its own)
    return_scale: float = 1000.0   # DT-family baselines divide returns-to-go by this (about |return|)

    @property
    def gym_id(self) -> str:
        return GYM_IDS[self.env][0]

    @property
    def episode_steps(self) -> int:
        return GYM_IDS[self.env][1]

    @cached_property
    def tasks(self) -> list[dict]:
        count = self.num_train if self.shared_tasks else self.num_train + self.num_test
        return self.sample(np.random.default_rng(self.seed), count)

    @property
    def train_ids(self) -> list[int]:
        return list(range(self.num_train))

    @property
    def test_ids(self) -> list[int]:
        if self.shared_tasks:
            return list(range(self.num_train))
        return list(range(self.num_train, self.num_train + self.num_test))

    def kwargs(self, task_id: int) -> dict:
        if not 0 <= task_id < len(self.tasks):
            raise UnknownNameError(f"{self.name} has tasks 0..{len(self.tasks) - 1}, not {task_id}")
        return {**dict(self.fixed_kwargs), **self.tasks[task_id]}

    def make(self, task_id: int, seed: int | None = None, **kwargs):
        """The gymnasium environment of task ``task_id`` (with its time limit)."""
        from seqrl.envs.registry import quiet_repeated_mujoco_warnings

        register_envs()
        quiet_repeated_mujoco_warnings()
        env = gym.make(self.gym_id, **self.kwargs(task_id), **kwargs)
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env

    @property
    def behaviour_family(self) -> str:
        return self.behaviour or self.name

    def behaviour_tasks(self, count: int = 1000) -> list[dict]:
        """Tasks for training the behaviour policy (``set_task`` arguments): drawn from the family's
        distribution with another seed than the split's (the two-task families give their two tasks)."""
        return self.sample(np.random.default_rng(self.seed + 10_000), count)

    def task_vector(self, task_id: int) -> np.ndarray:
        """The task parameter as a vector (what privileged behaviour policies and oracle DT see)."""
        env = self.make(task_id)
        try:
            return env.unwrapped.task_vector()
        finally:
            env.close()


FAMILIES: dict[str, TaskFamily] = {f.name: f for f in [
    TaskFamily("point-robot", "PointRobot", 40, 10, _half_circle_goals, seed=101,
               return_scale=10.0, description="2-D point, goals on the unit half-circle, dense reward"),
    TaskFamily("point-robot-sparse", "PointRobot", 40, 10, _half_circle_goals, seed=101,
               fixed_kwargs=(("sparse", True),), behaviour="point-robot", return_scale=10.0,
               description="point-robot's goals, reward only within 0.2 of the goal"),
    TaskFamily("cheetah-vel", "HalfCheetahVel", 35, 5,
               lambda rng, n: [{"velocity": float(v)} for v in rng.uniform(0.0, 3.0, size=n)], seed=102,
               return_scale=500.0, description="HalfCheetah, target velocity U(0, 3)"),
    TaskFamily("cheetah-dir", "HalfCheetahDir", 2, 0,
               lambda rng, n: [{"direction": 1.0}, {"direction": -1.0}], seed=103, shared_tasks=True,
               return_scale=500.0, description="HalfCheetah, forward or backward"),
    TaskFamily("ant-fwd-back", "AntDir", 2, 0,
               lambda rng, n: [{"angle": 0.0}, {"angle": float(np.pi)}], seed=104, shared_tasks=True,
               behaviour="ant-dir", return_scale=500.0, description="Ant, forward or backward"),
    TaskFamily("ant-dir", "AntDir", 45, 5,
               lambda rng, n: [{"angle": float(a)} for a in rng.uniform(0.0, 2 * np.pi, size=n)],
               seed=105, return_scale=500.0, description="Ant, direction U[0, 2 pi)"),
    TaskFamily("hopper-params", "HopperParams", 30, 10, _params_sampler("Hopper-v5"), seed=106,
               description="Hopper, random body masses, inertias, damping and friction"),
    TaskFamily("walker-params", "Walker2dParams", 30, 10, _params_sampler("Walker2d-v5"), seed=107,
               description="Walker2d, random body masses, inertias, damping and friction"),
]}


class PrivilegedTasks(gym.Wrapper):
    """For training a family's behaviour policy: every reset switches to a task drawn from
    ``family.behaviour_tasks()``, and the observation is the environment's with the task vector
    appended (the policy is privileged: it sees the task)."""

    def __init__(self, family: TaskFamily, seed: int = 0):
        super().__init__(family.make(0))
        self.tasks = family.behaviour_tasks()
        self.rng = np.random.default_rng(seed)
        inner = self.env.observation_space
        extra = len(self.env.unwrapped.task_vector())
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (inner.shape[0] + extra,), np.float32)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.env.unwrapped.set_task(**self.tasks[self.rng.integers(len(self.tasks))])
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observation(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.observation(obs), reward, terminated, truncated, info

    def observation(self, obs):
        return np.concatenate([obs, self.env.unwrapped.task_vector()]).astype(np.float32)


def get_family(name: str) -> TaskFamily:
    if name not in FAMILIES:
        raise UnknownNameError(f"unknown task family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


register_envs()
