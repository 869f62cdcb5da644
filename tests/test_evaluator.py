"""The evaluator: episodes shared out to worker processes give the episodes of a one-process run."""

import numpy as np
import pytest
import torch

from seqrl.errors import ConfigError
from seqrl.eval.evaluator import evaluate
from seqrl.models import DecisionTransformer, MLPPolicy
from seqrl.policy import Policy

SPEC = {"obs_mean": [0.0] * 11, "obs_std": [1.0] * 11, "return_scale": 1000.0}


def _dt_policy(seed=0):
    torch.manual_seed(seed)
    model = DecisionTransformer(11, 3, context_len=5, embed_dim=32, num_layers=2).eval()
    with torch.no_grad():  # larger weights than the init, so that the episodes differ in length
        for p in model.parameters():
            p.mul_(8.0)
    return Policy(model, SPEC)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_workers_give_the_episodes_of_one_process(one_thread):
    """Each episode keeps its seed in its shard, and its actions do not depend on the rest of the
    batch beyond float rounding; shards of unequal sizes (7 episodes over 3 processes)."""
    alone = evaluate(_dt_policy(), "Hopper-v5", 7, target_return=3600.0, seed=5)
    shared = evaluate(_dt_policy(), "Hopper-v5", 7, target_return=3600.0, seed=5, workers=3)
    assert shared["workers"] == 3 and alone["workers"] == 1
    assert shared["episode_lengths"] == alone["episode_lengths"]
    assert len(set(alone["episode_lengths"])) > 1          # episodes end at different steps (select)
    np.testing.assert_allclose(shared["returns"], alone["returns"], rtol=1e-4)
    assert shared["env_steps"] == alone["env_steps"]
    # a shard seeded from 0 instead of its first episode's index would repeat episode 0's start
    assert len(set(np.round(alone["returns"], 3))) == 7


def test_workers_evaluate_an_mlp_policy_and_return_threads(one_thread):
    torch.manual_seed(0)
    policy = Policy(MLPPolicy(11, 3).eval(), SPEC)
    before = torch.get_num_threads()
    alone = evaluate(policy, "Hopper-v5", 4, seed=0)
    shared = evaluate(policy, "Hopper-v5", 4, seed=0, workers=2)
    assert torch.get_num_threads() == before
    assert shared["episode_lengths"] == alone["episode_lengths"]
    np.testing.assert_allclose(shared["returns"], alone["returns"], rtol=1e-4)


def test_more_workers_than_episodes_and_bad_worker_counts():
    assert evaluate(_dt_policy(), "Hopper-v5", 1, target_return=3600.0, workers=4)["workers"] == 1
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="workers"):
            evaluate(_dt_policy(), "Hopper-v5", 2, target_return=3600.0, workers=bad)


def test_workers_need_a_seqrl_policy():
    class Zeros:
        def reset(self, **kwargs):
            pass

        def act(self, obs, reward):
            return np.zeros((len(obs), 3), np.float32)

        def select(self, rows):
            pass

    assert evaluate(Zeros(), "Hopper-v5", 2)["env_steps"] > 0
    with pytest.raises(ConfigError, match="seqrl Policy"):
        evaluate(Zeros(), "Hopper-v5", 2, workers=2)
