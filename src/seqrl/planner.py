"""Beam search with CMT's generator as the world model (the improvement stage's relabeller).

As the Trajectory Transformer's beam search (Janner et al. 2021, Section 3.2 and Algorithm 1), adapted to
continuous tokens: from the state s_t at the end of each row's window, every beam proposes
``num_candidates`` actions, the generator predicts their reward and next state and the value of that
state, and the ``beam_width`` best partial plans survive. A plan is ranked by

    sum_{h <= d} discount^h r_hat_{t+h}  +  discount^(d+1) V_hat(s_hat_{t+d+1})      (depth d)

so the value head stands in for everything beyond the horizon. The search returns the first action of
the best plan.

Candidates. Candidate j of a beam at depth h is clip(mu + sigma * eps[h, j], -1, 1), where mu (and sigma
for a Gaussian head) come from the generator's action head for that beam and eps is standard normal
noise drawn once per planned state and depth (eps[h, 0] = 0, so the policy's own action is always a
candidate). Sharing eps across the beams of one depth makes the search a deterministic function of
(model, context, eps), so it can be checked against brute-force enumeration (tests/test_cmt.py).
Rewards and next states are the heads' means (no sampling of the model's own noise).

Cost. Every row's prompt and history are encoded once (prefill into a key/value cache); then each
depth feeds three tokens (a, r, s) per candidate and gathers the surviving beams' cache rows. The
``use_cache=False`` path recomputes the whole sequence for every new token, as a planner without a
cache must; ``seqrl bench planner`` times both.
"""

from __future__ import annotations

import torch

from seqrl.models.cmt import CMT
from seqrl.models.gpt import SharedPrefixCache


class _CachedContext:
    """Sequences whose keys and values are cached: each new token costs one token's forward. The
    prompt and history are cached once per planned state and shared by all its beams
    (``SharedPrefixCache``), so keeping or repeating beams copies only the planned tokens."""

    def __init__(self, gpt, tokens: torch.Tensor, max_len: int):
        self.gpt = gpt
        prefix = gpt.new_cache(tokens.shape[0], tokens.shape[1], device=tokens.device)
        last = torch.tensor([tokens.shape[1] - 1], device=tokens.device)
        self.last = gpt(tokens, prefix, keep=last)[:, 0]
        self.cache = SharedPrefixCache(prefix, max_len - tokens.shape[1])

    def feed(self, token: torch.Tensor) -> torch.Tensor:
        return self.gpt(token, self.cache)[:, 0]

    def select(self, rows: torch.Tensor) -> None:
        self.cache.select(rows)


class _RecomputedContext:
    """The same interface without a cache: every new token re-runs the whole sequence."""

    def __init__(self, gpt, tokens: torch.Tensor, max_len: int):
        self.gpt, self.tokens = gpt, tokens
        self.last = self._run()

    def _run(self) -> torch.Tensor:
        last = torch.tensor([self.tokens.shape[1] - 1], device=self.tokens.device)
        return self.gpt(self.tokens, keep=last)[:, 0]

    def feed(self, token: torch.Tensor) -> torch.Tensor:
        self.tokens = torch.cat([self.tokens, token], dim=1)
        return self._run()

    def select(self, rows: torch.Tensor) -> None:
        self.tokens = self.tokens[rows]


def candidate_noise(batch: int, horizon: int, num_candidates: int, act_dim: int,
                    generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """eps (B, horizon, N, act_dim): standard normal, with candidate 0 the mean (eps = 0)."""
    eps = torch.randn(batch, horizon, num_candidates, act_dim, generator=generator)
    eps[:, :, 0] = 0.0
    return eps.to(device)


@torch.no_grad()
def beam_search(model: CMT, prompt, states, actions, rewards, timesteps, horizon: int = 5,
                beam_width: int = 8, num_candidates: int = 8, noise_std: float = 0.2,
                discount: float = 0.99, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, use_cache: bool = True):
    """Plan from the last step of each row.

    Args:
        model: a CMT (its generator is the world model; its statistics map rewards and values back).
        prompt: (B, P, H) prompt vectors.
        states, actions, rewards, timesteps: the window up to and including the state to plan from,
            (B, T, ...), in the generator's input units (normalised states and rewards); the last
            step's action and reward are ignored. All rows share T.
        horizon, beam_width, num_candidates: search depth, beams kept, actions proposed per beam.
        noise_std: sigma of the candidates for a deterministic action head (a Gaussian head uses its
            own standard deviation).
        discount: the ranking's discount.
        noise: eps (B, horizon, num_candidates, act_dim); drawn with ``generator`` when None.
        use_cache: False recomputes the whole sequence for every token (the benchmark's peer).

    Returns:
        (first actions of the best plans (B, act_dim), their scores (B,) in environment units).
    """
    if horizon < 1 or beam_width < 1 or num_candidates < 1:
        raise ValueError("horizon, beam_width and num_candidates must be >= 1")
    gen = model.generator
    b = states.shape[0]
    n, a_dim = num_candidates, gen.act_dim
    rows_b = torch.arange(b, device=states.device)
    if noise is None:
        noise = candidate_noise(b, horizon, n, a_dim, generator, states.device)
    bias = gen.step_bias(prompt)                  # None unless the generator adds the prompt to steps
    tokens = torch.cat([gen.embed_prompt(prompt),
                        gen.embed_steps(states, actions, rewards, timesteps, bias)[:, :-2]], dim=1)
    context = (_CachedContext if use_cache else _RecomputedContext)(
        gen.gpt, tokens, tokens.shape[1] + 3 * horizon)
    h_state = context.last                        # output at s_t of each live beam, (B * beams, H)
    t = timesteps[:, -1]
    beams = 1
    score = torch.zeros(b, 1, device=states.device)   # discounted predicted reward so far
    first = None                                       # (B, beams, act_dim)
    for depth in range(horizon):
        mean, log_std, _ = gen.read_state(h_state)
        sigma = noise_std if log_std is None else log_std.exp().view(b, beams, 1, a_dim)
        cand = (mean.view(b, beams, 1, a_dim) + sigma * noise[:, depth].view(b, 1, n, a_dim)).clamp(-1, 1)
        width = beams * n
        context.select(torch.arange(b * beams, device=states.device).repeat_interleave(n))
        time = (t + depth).repeat_interleave(width)
        row_bias = None if bias is None else bias.repeat_interleave(width, dim=0)
        h_a = context.feed(gen.embed_token("action", cand.reshape(b * width, a_dim), time, row_bias))
        r_norm, _ = gen.read_action(h_a)
        h_r = context.feed(gen.embed_token("reward", r_norm, time, row_bias))
        s_next, _ = gen.read_reward(h_r)
        h_state = context.feed(gen.embed_token("state", s_next, time + 1, row_bias))
        value = model.denormalize_value(gen.read_state(h_state)[2]).view(b, width)
        reward = model.denormalize_reward(r_norm).view(b, width)
        cumulative = score.repeat_interleave(n, dim=1) + discount ** depth * reward
        rank = cumulative + discount ** (depth + 1) * value
        firsts = cand.reshape(b, width, a_dim) if first is None else first.repeat_interleave(n, dim=1)
        if depth == horizon - 1:
            best = rank.argmax(dim=1)
            return firsts[rows_b, best], rank[rows_b, best]
        beams = min(beam_width, width)
        top = rank.topk(beams, dim=1).indices                                    # (B, beams)
        keep = (rows_b[:, None] * width + top).reshape(-1)
        context.select(keep)
        h_state = h_state[keep]
        score = cumulative.gather(1, top)
        first = firsts.gather(1, top.unsqueeze(-1).expand(-1, -1, a_dim))
