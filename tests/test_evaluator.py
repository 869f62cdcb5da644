"""The evaluator's environment worker processes: the same episodes as stepping everything in one process."""

import numpy as np
import pytest
import torch

from seqrl.eval.evaluator import evaluate, use_env_workers
from seqrl.models import DecisionTransformer, MLPPolicy
from seqrl.policy import Policy

HOPPER = (11, 3)  # observation and action sizes of Hopper-v5


def _policy(kind: str) -> Policy:
    torch.manual_seed(0 if kind == "dt" else 1)
    obs_dim, act_dim = HOPPER
    std = 1.0 if kind == "dt" else 0.001  # large inputs: the random MLP then acts on the starts' noise
    spec = {"obs_mean": [0.0] * obs_dim, "obs_std": [std] * obs_dim, "return_scale": 1000.0,
            "target_return": 3600.0, "eval_keep": 2}
    if kind == "dt":
        model = DecisionTransformer(obs_dim, act_dim, context_len=5, embed_dim=16, num_layers=2,
                                    num_heads=2)
    else:
        model = MLPPolicy(obs_dim, act_dim, hidden_dim=16)
    return Policy(model.eval(), spec)


@pytest.mark.parametrize("kind", ["dt", "bc"])
def test_env_workers_gives_the_same_episodes(kind):
    torch.set_num_threads(1)   # the same arithmetic in both runs
    plain = evaluate(_policy(kind), "Hopper-v5", episodes=5, seed=3, env_workers=False)
    workers = evaluate(_policy(kind), "Hopper-v5", episodes=5, seed=3, env_workers=True)
    assert not plain["env_workers"] and workers["env_workers"]
    # Hopper episodes end at different steps, so finished episodes leave both halves' batches
    assert len(set(plain["episode_lengths"])) > 1
    assert plain["episode_lengths"] == workers["episode_lengths"]
    # a half's batch has fewer rows, and a BLAS may round a matrix product of fewer rows differently
    # (seen here: 8e-5 relative on the BC returns, whose large inputs amplify it); nothing else differs
    np.testing.assert_allclose(workers["returns"], plain["returns"], rtol=1e-3)
    assert workers["env_steps"] == plain["env_steps"]


def test_fork_shares_the_model_but_not_the_episodes():
    policy = _policy("dt")
    twin = policy.fork()
    assert twin.model is policy.model
    policy.reset(num_envs=3)
    twin.reset(num_envs=2)
    obs = np.zeros((3, HOPPER[0]), np.float32)
    policy.act(obs)
    assert policy._t == 1 and twin._t == 0 and twin.num_envs == 2


def test_when_workers_are_used():
    policy = _policy("dt")
    assert use_env_workers(policy, 4, env_workers=True)
    assert not use_env_workers(policy, 4, env_workers=False)
    assert not use_env_workers(policy, 1, env_workers=True)            # nothing to split
    assert not use_env_workers(policy, 4, video="x.gif", env_workers=True)  # frames come from this process
    assert not use_env_workers(object(), 4, env_workers=True)          # a policy without fork
