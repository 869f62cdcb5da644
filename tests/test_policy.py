"""Policy: the cached rollout context equals the full forward over the same window."""

import numpy as np
import pytest
import torch

from seqrl.models import DecisionTransformer, MLPPolicy
from seqrl.policy import Policy


def _dt_policy(k=6, keep=None, seed=0, **model_kwargs):
    torch.manual_seed(seed)
    model = DecisionTransformer(4, 2, context_len=k, embed_dim=16, num_layers=2, num_heads=2,
                                **model_kwargs)
    spec = {"obs_mean": np.full(4, 0.5).tolist(), "obs_std": np.full(4, 2.0).tolist(),
            "return_scale": 100.0, "target_return": 50.0, "eval_keep": keep}
    return Policy(model, spec)


@pytest.mark.parametrize("keep", [0, 2, 3, 5])
@pytest.mark.parametrize("embedding", ["absolute", "position"])
def test_every_action_equals_the_full_forward_over_its_window(keep, embedding):
    k, steps, n = 6, 23, 2
    policy = _dt_policy(k, keep, timestep_embedding=embedding)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((steps, n, 4)).astype(np.float32)
    rewards = rng.standard_normal((steps, n)).astype(np.float32)
    policy.reset(target_return=50.0, num_envs=n)
    actions = np.stack([policy.act(obs[t], rewards[t - 1] if t else 0.0) for t in range(steps)])

    # the reference: rebuild each step's window by the documented rule and run the full model on it
    norm = (torch.from_numpy(obs) - 0.5) / 2.0
    rtg = 50.0 - np.concatenate([np.zeros((1, n)), np.cumsum(rewards[:-1], axis=0)])  # (steps, n)
    start = 0
    for t in range(steps):
        if t - start == k:
            start = t - keep
        w = slice(start, t + 1)
        with torch.no_grad():
            full = policy.model(norm[w].transpose(0, 1), torch.from_numpy(actions[w]).transpose(0, 1),
                                torch.tensor(rtg[w] / 100.0, dtype=torch.float32).T,
                                torch.arange(start, t + 1).repeat(n, 1))
        np.testing.assert_allclose(actions[t], full[:, -1].numpy(), atol=1e-5, rtol=1e-5)


def test_keep_k_minus_1_is_the_reference_sliding_window():
    """With eval_keep = K - 1 every action reads exactly the last K steps, as the DT reference does."""
    k, steps = 5, 12
    policy = _dt_policy(k, keep=k - 1)
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((steps, 4)).astype(np.float32)
    policy.reset(num_envs=1)
    actions = np.stack([policy.act(obs[t], 1.0) for t in range(steps)])
    for t in range(k, steps):
        w = slice(t - k + 1, t + 1)
        with torch.no_grad():
            full = policy.model(((torch.from_numpy(obs[w]) - 0.5) / 2.0)[None],
                                torch.from_numpy(actions[w])[None],
                                torch.tensor((50.0 - np.arange(w.start, t + 1)) / 100.0,
                                             dtype=torch.float32)[None],
                                torch.arange(w.start, t + 1)[None])
        np.testing.assert_allclose(actions[t], full[0, -1].numpy(), atol=1e-5, rtol=1e-5)


def test_select_drops_rows_without_changing_the_others():
    n = 3
    batched = _dt_policy(4, keep=2)
    batched.reset(num_envs=n)
    singles = [_dt_policy(4, keep=2) for _ in range(n)]
    for s in singles:
        s.reset(num_envs=1)
    rng = np.random.default_rng(2)
    rows = np.arange(n)
    for t in range(10):
        o = rng.standard_normal((n, 4)).astype(np.float32)
        if t == 4:
            batched.select(np.array([True, False, True]))
            rows = np.array([0, 2])
        out = batched.act(o[rows], 0.5)
        for j, i in enumerate(rows):
            np.testing.assert_allclose(out[j], singles[i].act(o[i], 0.5), atol=1e-5)


def test_mlp_policy_and_input_errors():
    from seqrl.errors import ConfigError

    policy = Policy(MLPPolicy(4, 2), {"obs_mean": [0.0] * 4, "obs_std": [1.0] * 4})
    with pytest.raises(ConfigError, match="reset"):
        policy.act(np.zeros(4))
    policy.reset(num_envs=2)
    assert policy.act(np.zeros((2, 4))).shape == (2, 2)
    with pytest.raises(ConfigError, match="2 environments"):
        policy.act(np.zeros((3, 4)))
    with pytest.raises(ConfigError, match="eval_keep"):
        _dt_policy(4, keep=4)
