"""Names for the environments seqrl knows, and factories for single and vectorised instances.

A seqrl name (``hopper``) maps to a gymnasium id (``Hopper-v5``); anything gymnasium can make may also
be given by its full id. Seeding follows gymnasium: ``reset(seed=s)`` once, then the environment's own
generator; a vector environment with seed s seeds its copies s, s+1, ...
"""

from __future__ import annotations

import sys

from seqrl.errors import UnknownNameError

ENVIRONMENTS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}
# Gymnasium ids of older versions that the same seqrl name (and reference scores) stand for.
_ALIASES = {
    "hopper": "hopper", "halfcheetah": "halfcheetah", "cheetah": "halfcheetah",
    "walker2d": "walker2d", "walker": "walker2d", "ant": "ant",
}


def env_name(env: str) -> str:
    """seqrl's short name for a name or gymnasium id: ``Hopper-v5`` -> ``hopper``.

    Unknown ids come back lower-cased without their version, so callers can still look them up.
    """
    base = env.split("/")[-1].split("-")[0].lower()
    return _ALIASES.get(base, base)


def gym_id(env: str) -> str:
    """The gymnasium id for a seqrl name; a full gymnasium id passes through unchanged."""
    if env in ENVIRONMENTS:
        return ENVIRONMENTS[env]
    if "-v" in env:
        return env
    known = ", ".join(ENVIRONMENTS)
    raise UnknownNameError(f"unknown environment '{env}' (known: {known}, or a gymnasium id like Hopper-v5)")


_MUJOCO_WARNINGS_SEEN: set[str] = set()


def _print_once(message: str) -> None:
    if "deprecated" in message:  # about gymnasium's model files, nothing a user can act on
        return
    if message not in _MUJOCO_WARNINGS_SEEN:
        _MUJOCO_WARNINGS_SEEN.add(message)
        print(f"WARNING: {message} (MuJoCo; shown once)", file=sys.stderr)


def quiet_repeated_mujoco_warnings() -> None:
    """Print each distinct MuJoCo warning once per process, and none of its deprecation notices. MuJoCo
    warns every time it compiles a model, so an evaluation on 40 HalfCheetah copies printed the same
    deprecation of gymnasium's XML 40 times; that notice is about gymnasium's files, and printed before
    an ``error:`` line it made the one-line error two lines. A handler the user installed is left alone."""
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_print_once)


def make_env(env: str, seed: int | None = None, **kwargs):
    """One gymnasium environment, reset once with ``seed`` so its generator is seeded."""
    import gymnasium as gym

    quiet_repeated_mujoco_warnings()
    env_id = gym_id(env)
    if env_id.startswith("seqrl/"):
        import seqrl.envs.tasks  # noqa: F401  (registers the task environments)
    try:
        instance = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise UnknownNameError(f"gymnasium cannot make '{env_id}': {exc}") from None
    if seed is not None:
        instance.reset(seed=seed)
        instance.action_space.seed(seed)
    return instance


def make_vec_env(env: str, num_envs: int, seed: int | None = None, asynchronous: bool = False,
                 render_first: bool = False, **kwargs):
    """``num_envs`` copies in a gymnasium vector environment; copy i is seeded with ``seed + i``.

    Synchronous by default: MuJoCo steps are tens of microseconds, cheaper than inter-process traffic.
    ``render_first`` makes copy 0 render ``rgb_array`` frames (``vec.envs[0].render()``, for a video).
    """
    import gymnasium as gym

    quiet_repeated_mujoco_warnings()
    env_id = gym_id(env)
    if env_id.startswith("seqrl/"):
        import seqrl.envs.tasks  # noqa: F401  (registers the task environments)
    fns = [lambda: gym.make(env_id, **kwargs) for _ in range(num_envs)]
    if render_first:
        fns[0] = lambda: gym.make(env_id, render_mode="rgb_array", **kwargs)
    vec = gym.vector.AsyncVectorEnv(fns) if asynchronous else gym.vector.SyncVectorEnv(fns)
    if seed is not None:
        vec.reset(seed=seed)
        vec.action_space.seed(seed)
    return vec


def check_mujoco_gl() -> None:
    """ConfigError if ``MUJOCO_GL`` names an OpenGL backend this machine lacks: MuJoCo then fails at
    import, so every MuJoCo environment would (``egl`` or ``osmesa`` need their system libraries)."""
    import os

    backend = os.environ.get("MUJOCO_GL")
    if not backend:
        return
    try:
        import mujoco  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - OpenGL loaders fail with assorted exception types
        from seqrl.errors import ConfigError

        detail = " ".join(str(exc).split())[:120]
        raise ConfigError(f"MuJoCo cannot start with MUJOCO_GL={backend} ({type(exc).__name__}: {detail}); "
                          f"unset it, or install that OpenGL backend") from None


def check_spaces(env: str, obs_dim: int, act_dim: int, what: str) -> None:
    """ConfigError unless the environment's (obs_dim, act_dim) are those of ``what`` (data or policy)."""
    from seqrl.errors import ConfigError

    env_obs, env_act = env_spaces(env)
    if (env_obs, env_act) != (obs_dim, act_dim):
        raise ConfigError(f"environment {gym_id(env)} has obs_dim {env_obs} and act_dim {env_act}, but "
                          f"the {what} has {obs_dim} and {act_dim}: pass the right --env")


def env_spaces(env: str) -> tuple[int, int]:
    """(obs_dim, act_dim) of an environment, from a throwaway instance."""
    instance = make_env(env)
    try:
        return instance.observation_space.shape[0], instance.action_space.shape[0]
    finally:
        instance.close()
