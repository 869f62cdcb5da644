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


def _scrambled(model, seed=0):
    """Weights large enough that actions spread over (-1, 1), so a precision test can fail."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
    return model


def _rollout(policy, obs, rewards, n):
    policy.reset(target_return=50.0, num_envs=n)
    return np.stack([policy.act(obs[t], rewards[t - 1] if t else 0.0) for t in range(len(obs))])


@pytest.mark.parametrize("make", ["dt", "cmt", "mlp"])
def test_bf16_rollouts_follow_fp32_within_bf16_rounding(make):
    from seqrl.models import CMT

    def build():
        if make == "dt":
            return _scrambled(DecisionTransformer(4, 2, context_len=6, embed_dim=16, num_layers=2))
        if make == "cmt":
            return _scrambled(CMT(4, 2, context_len=6, fragment_len=6, prompt_len=2, embed_dim=16,
                                  num_layers=2, encoder_layers=1, adaptor_hidden=16))
        return _scrambled(MLPPolicy(4, 2))

    spec = {"obs_mean": [0.0] * 4, "obs_std": [1.0] * 4, "return_scale": 100.0, "eval_keep": 2,
            "prompt_source": "history"}
    rng = np.random.default_rng(3)
    obs = rng.standard_normal((15, 3, 4)).astype(np.float32)
    rewards = rng.standard_normal((15, 3)).astype(np.float32)
    fp32 = _rollout(Policy(build(), spec), obs, rewards, 3)
    model = build()
    half = Policy(model, {**spec, "eval_precision": "bf16"})
    assert all(p.dtype == torch.bfloat16 for p in half.model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())   # a trainer's model stays fp32
    bf16 = _rollout(half, obs, rewards, 3)
    assert bf16.dtype == np.float32 and np.abs(fp32).mean() > 0.3    # actions far from 0
    assert np.abs(bf16 - fp32).max() < 0.1 and np.abs(bf16 - fp32).mean() < 0.02
    assert not np.array_equal(bf16, fp32)                             # it did run in bf16


def test_unknown_eval_precision_is_a_config_error():
    from seqrl.algos.base import apply_overrides
    from seqrl.algos.dt import DTConfig
    from seqrl.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_precision"):
        Policy(MLPPolicy(4, 2), {"obs_mean": [0.0] * 4, "obs_std": [1.0] * 4, "eval_precision": "fp16"})
    with pytest.raises(ConfigError, match="eval_precision must be one of"):
        apply_overrides(DTConfig(), ["eval_precision=int8"])
    assert apply_overrides(DTConfig(), ["eval_precision=bf16"]).eval_precision == "bf16"


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch):
    import warnings

    import seqrl.policy as policy_module

    spec = {"obs_mean": [0.0] * 4, "obs_std": [1.0] * 4, "eval_precision": "bf16"}
    monkeypatch.setattr(policy_module, "cpu_has_bf16_kernels", lambda: False)
    with pytest.warns(UserWarning, match="without bf16 instructions"):
        Policy(MLPPolicy(4, 2), spec)
    monkeypatch.setattr(policy_module, "cpu_has_bf16_kernels", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Policy(MLPPolicy(4, 2), spec)
        Policy(MLPPolicy(4, 2), {**spec, "eval_precision": "fp32"})
