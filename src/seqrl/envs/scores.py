"""Normalised scores: 100 * (return - random) / (expert - random), D4RL's convention.

Reference returns are D4RL's (Fu et al., 2020, ``d4rl/infos.py``), measured on the v2 MuJoCo
environments. seqrl keeps them for the v5 environments too, so its numbers sit on the same scale as the
papers' tables; a dataset's own stored reference (Minari's ``ref_min_score``/``ref_max_score``) is used
instead where it has one.
"""

from __future__ import annotations

import numpy as np

from seqrl.errors import UnknownNameError

# name: (random return, expert return)
D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


def reference_returns(env: str) -> tuple[float, float]:
    """(random, expert) reference returns for a seqrl environment name or gymnasium id."""
    from seqrl.envs.registry import env_name

    name = env_name(env)
    if name not in D4RL_REFERENCE_RETURNS:
        raise UnknownNameError(f"no reference returns for environment '{env}'")
    return D4RL_REFERENCE_RETURNS[name]


def normalized_score(returns, ref_min: float, ref_max: float) -> np.ndarray | float:
    """100 * (returns - ref_min) / (ref_max - ref_min); keeps the input's shape."""
    out = 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
    return float(out) if out.ndim == 0 else out

# Target returns DT-family models are conditioned on at evaluation, as in the DT paper (Chen et al.
# 2021, Appendix A) and ODT; halfcheetah is also reported at 12000 in the DT paper.
DEFAULT_TARGET_RETURNS: dict[str, tuple[float, ...]] = {
    "hopper": (3600.0,),
    "halfcheetah": (6000.0,),
    "walker2d": (5000.0,),
    "ant": (6000.0,),
}
