"""Environments: names, factories and reference scores."""

from seqrl.envs.registry import ENVIRONMENTS, env_name, env_spaces, gym_id, make_env, make_vec_env
from seqrl.envs.scores import D4RL_REFERENCE_RETURNS, normalized_score, reference_returns

__all__ = ["ENVIRONMENTS", "env_name", "env_spaces", "gym_id", "make_env", "make_vec_env",
           "D4RL_REFERENCE_RETURNS", "normalized_score", "reference_returns"]
