"""The GPT backbone and Decision Transformer: causality, padding, and KV-cache equality."""

import pytest
import torch

from seqrl.models import GPT, DecisionTransformer
from seqrl.models.gpt import weight_decay_groups


def _window(b=3, t=7, obs_dim=5, act_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, obs_dim, generator=g), torch.rand(b, t, act_dim, generator=g) * 2 - 1,
            torch.randn(b, t, generator=g), torch.arange(t).repeat(b, 1) + 3)


def test_gpt_cache_in_pieces_equals_whole():
    torch.manual_seed(0)
    gpt = GPT(embed_dim=16, num_layers=2, num_heads=2, dropout=0.0).eval()
    x = torch.randn(2, 9, 16)
    whole = gpt(x)
    cache = gpt.new_cache(2, 9)
    pieces = [gpt(x[:, :4], cache), gpt(x[:, 4:5], cache), gpt(x[:, 5:9], cache)]
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(pieces, 1), whole, atol=1e-5, rtol=1e-5)


def test_gpt_is_causal():
    torch.manual_seed(0)
    gpt = GPT(embed_dim=16, num_layers=2, num_heads=1, dropout=0.0).eval()
    x = torch.randn(1, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 16)  # change the future
    torch.testing.assert_close(gpt(x)[:, :4], gpt(y)[:, :4])
    assert not torch.allclose(gpt(x)[:, 4:], gpt(y)[:, 4:])


@pytest.mark.parametrize("embedding", ["absolute", "position", "none"])
@pytest.mark.parametrize("returns", [True, False])
def test_dt_decode_equals_full_forward(embedding, returns):
    torch.manual_seed(0)
    model = DecisionTransformer(5, 2, context_len=7, embed_dim=32, num_layers=3, num_heads=2,
                                timestep_embedding=embedding, condition_on_returns=returns).eval()
    s, a, r, ts = _window()
    full = model(s, a, r, ts)                                       # (B, T, act_dim)
    cache = model.new_cache(3)
    with torch.no_grad():
        # prefill the first 3 steps (the third one's action unknown), then one step at a time
        step_preds = [model.decode(cache, s[:, :3], a[:, :3], r[:, :3], ts[:, :3])]
        for t in range(3, 7):
            step_preds.append(model.decode(cache, s[:, t - 1:t + 1], a[:, t - 1:t + 1],
                                           r[:, t - 1:t + 1], ts[:, t - 1:t + 1]))
    torch.testing.assert_close(torch.stack(step_preds, 1), full[:, 2:], atol=1e-5, rtol=1e-5)


def test_dt_prediction_ignores_own_and_future_actions_and_right_padding():
    torch.manual_seed(0)
    model = DecisionTransformer(5, 2, context_len=7, embed_dim=32).eval()
    s, a, r, ts = _window()
    base = model(s, a, r, ts)
    a2, s2 = a.clone(), s.clone()
    a2[:, 4:] = 0.0     # the action at step 4 and later: what right padding zeroes
    s2[:, 5:] = 0.0
    out = model(s2, a2, r, ts)
    torch.testing.assert_close(out[:, :5], base[:, :5])
    assert not torch.allclose(out[:, 5:], base[:, 5:])


def test_dt_timesteps_beyond_table_are_clamped():
    model = DecisionTransformer(5, 2, context_len=4, embed_dim=16, max_timestep=10).eval()
    s, a, r, _ = _window(t=4)
    late = torch.full((3, 4), 5000)
    torch.testing.assert_close(model(s, a, r, late), model(s, a, r, torch.full((3, 4), 10)))


def test_weight_decay_groups_cover_every_parameter_once():
    model = DecisionTransformer(5, 2, embed_dim=16)
    decay, no_decay = weight_decay_groups(model, 0.1)
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(p.dim() == 2 for p in decay["params"])
    assert any(p is model.embed_time.weight for p in no_decay["params"])


def test_cpu_dropout_rate_scale_seed_and_gradient():
    from seqrl.models.gpt import dropout

    x = torch.ones(1_000_000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.1, training=True)
    p_eff = round(0.1 * 65536) / 65536
    dropped = float((y == 0).float().mean())
    assert abs(dropped - p_eff) < 5 * (p_eff * (1 - p_eff) / x.numel()) ** 0.5
    assert torch.all((y == 0) | (y == 1 / (1 - p_eff)))           # kept elements scaled exactly
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())                  # gradient = mask * scale
    torch.manual_seed(0)
    assert torch.equal(dropout(x.detach(), 0.1, training=True), y.detach())   # seeded like torch
    odd = torch.randn(3, 5, 7)                                       # numel not a multiple of 4
    assert dropout(odd, 0.5, training=True).shape == odd.shape
    assert dropout(odd, 0.1, training=False) is odd and dropout(odd, 0.0, training=True) is odd
    assert torch.equal(dropout(odd, 1.0, training=True), torch.zeros_like(odd))


def test_attention_with_dropout_is_masked_softmax_with_dropped_weights():
    from seqrl.models.gpt import attention, dropout

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g) for _ in range(3))
    mask = torch.ones(5, 5).tril().bool()
    torch.testing.assert_close(attention(q, k, v, mask, 0.0),
                               torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.manual_seed(3)
    got = attention(q, k, v, mask, 0.2)
    weights = ((q @ k.transpose(-1, -2)) / 8 ** 0.5).masked_fill(~mask, float("-inf")).softmax(-1)
    torch.manual_seed(3)
    torch.testing.assert_close(got, dropout(weights, 0.2, True) @ v)


def test_gpt_in_training_is_causal_and_seeded():
    torch.manual_seed(0)
    gpt = GPT(embed_dim=16, num_layers=2, num_heads=2, dropout=0.3).train()
    x = torch.randn(2, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 16)
    torch.manual_seed(5)
    out_x = gpt(x)
    torch.manual_seed(5)
    out_y = gpt(y)
    torch.testing.assert_close(out_x[:, :4], out_y[:, :4])          # same masks, no peeking ahead
    assert not torch.allclose(out_x[:, 4:], out_y[:, 4:])
    assert not torch.allclose(gpt(x), out_x)                        # a new draw, new masks
