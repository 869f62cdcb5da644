"""Contextual Meta Transformer networks (CMT, seeds/000, Section 4.1 and Fig. 1).

Three parts:
  * ``TrajectoryEncoder`` (A_e): a bidirectional transformer over a trajectory fragment. Each step
    (s, a, r) is one token; ``prompt_len`` learned query tokens are put in front of the fragment (as
    BERT's [CLS], one per prompt vector) and their outputs are the policy prompt z, shape (P, H).
  * ``Adaptor`` (L(z; xi)): z' = z + MLP(z) with the last layer initialised to zero, so it is exactly
    the identity until the improvement stage trains it (Fig. 1a: "z == z'" in the representation stage).
  * ``Generator`` (A_g): a causal GPT that reads the prompt as a prefix and then (s_t, a_t, r_t) tokens.
    It is the union of Eq. 2's three models plus a value head:
      - policy pi(a_t | z, s_t, tau_<t)   from the output at s_t;
      - value V(s_t): the behaviour's discounted return from t, also from the output at s_t (the
        planner's estimate beyond its horizon, as the Trajectory Transformer's value token);
      - reward R(s_t, a_t)               from the output at a_t;
      - dynamics P(s_{t+1} | s_t, a_t)   from the output at r_t.
    Heads are deterministic (trained with MSE) or Gaussian (mean and log-std, trained by negative
    log-likelihood), as Eq. 2 allows; the planner samples candidate actions from either.

For offline meta-RL (Section 4.2, Fig. 2) the prompt is a *task* prompt encoded from a context
trajectory of the same task, and a learned [SEP] token (``sep_token=True``) separates it from the
history: the generator reads [z_1 .. z_P, SEP, s_0, a_0, r_0, ...]. With ``task_encoder=True`` the
model has both of Section 4.2's prompts: a policy prompt z from A_e and a task prompt t from a second
encoder of the same shape (F(t | tau)), and the generator reads [z_1 .. z_P, t_1 .. t_P, SEP, ...]; the
adaptor tunes the policy prompt only. With ``context_steps=k`` (two prompts only) the task prompt is
followed by the context fragment's first k steps themselves, one token per (s, a, r) step, the literal
reading of "concatenates a context trajectory with the input": [z, t, c_1 .. c_k, SEP, history].

``CMT`` holds all three plus the statistics that turn the generator's normalised rewards and values
back into environment units, and ``stored_prompt``: the prompt acting uses when it does not read the
episode's own history (see seqrl.algos.cmt).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrl.models.gpt import GPT, KVCache, init_weights

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class TrajectoryEncoder(nn.Module):
    """A_e: fragment (B, L) of (s, a, r) -> prompt (B, P, H)."""

    def __init__(self, obs_dim: int, act_dim: int, embed_dim: int = 128, num_layers: int = 2,
                 num_heads: int = 1, dropout: float = 0.1, prompt_len: int = 4, max_len: int = 64,
                 activation: str = "relu"):
        super().__init__()
        self.prompt_len, self.max_len = prompt_len, max_len
        self.embed_step = nn.Linear(obs_dim + act_dim + 1, embed_dim)
        self.embed_position = nn.Embedding(max_len, embed_dim)
        self.queries = nn.Parameter(torch.zeros(prompt_len, embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, 4 * embed_dim, dropout, activation,
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(embed_dim)
        self.apply(init_weights)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, states, actions, rewards, mask) -> torch.Tensor:
        """states (B, L, obs_dim), actions (B, L, act_dim), rewards (B, L), mask (B, L) bool."""
        b, length = states.shape[:2]
        if length > self.max_len:
            raise ValueError(f"fragment of {length} steps is longer than the encoder's {self.max_len}")
        x = self.embed_step(torch.cat([states, actions, rewards.unsqueeze(-1)], dim=-1))
        x = x + self.embed_position(torch.arange(length, device=x.device))
        tokens = torch.cat([self.queries.expand(b, -1, -1), x], dim=1)
        padding = torch.cat([torch.zeros(b, self.prompt_len, dtype=torch.bool, device=x.device), ~mask],
                            dim=1)
        h = self.transformer(tokens, src_key_padding_mask=padding)
        return self.ln(h[:, :self.prompt_len])


class Adaptor(nn.Module):
    """L(z; xi) = z + MLP(z), applied to each prompt vector; the identity at initialisation."""

    def __init__(self, embed_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))
        self.mlp.apply(init_weights)
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.mlp(z)


class GaussianHead(nn.Module):
    """Linear -> (mean, log_std); ``log_std`` is None for a deterministic head. ``squash`` puts the
    mean through tanh (actions live in [-1, 1])."""

    def __init__(self, embed_dim: int, out_dim: int, stochastic: bool, squash: bool = False):
        super().__init__()
        self.out_dim, self.stochastic, self.squash = out_dim, stochastic, squash
        self.linear = nn.Linear(embed_dim, 2 * out_dim if stochastic else out_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.linear(h)
        mean, log_std = (out.split(self.out_dim, dim=-1) if self.stochastic else (out, None))
        if self.squash:
            mean = torch.tanh(mean)
        if log_std is not None:
            log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


def head_loss(mean, log_std, target, mask) -> torch.Tensor:
    """Eq. 2's distance D: MSE for a deterministic head, Gaussian negative log-likelihood (up to a
    constant) for a stochastic one; averaged over the masked-in entries."""
    if log_std is None:
        err = (mean - target) ** 2
    else:
        err = 0.5 * ((target - mean) / log_std.exp()) ** 2 + log_std
    if err.dim() > mask.dim():
        err = err.mean(-1)
    return err[mask].mean()


class Generator(nn.Module):
    """A_g: causal GPT over [prompt (P tokens), (SEP), s_0, a_0, r_0, s_1, a_1, r_1, ...]."""

    TOKENS_PER_STEP = 3

    def __init__(self, obs_dim: int, act_dim: int, context_len: int = 20, prompt_len: int = 4,
                 embed_dim: int = 128, num_layers: int = 3, num_heads: int = 1, dropout: float = 0.1,
                 max_timestep: int = 1000, stochastic: bool = False, activation: str = "relu",
                 sep_token: bool = False, prompt_to_steps: bool = False):
        super().__init__()
        self.obs_dim, self.act_dim, self.context_len = obs_dim, act_dim, context_len
        self.prompt_len, self.max_timestep = prompt_len, max_timestep
        # the learnable [SEP] between a task prompt and the history (meta-RL, Section 4.2)
        self.sep = nn.Parameter(torch.randn(embed_dim) * 0.02) if sep_token else None
        self.prefix_len = prompt_len + int(sep_token)
        self.embed_state = nn.Linear(obs_dim, embed_dim)
        self.embed_action = nn.Linear(act_dim, embed_dim)
        self.embed_reward = nn.Linear(1, embed_dim)
        self.embed_time = nn.Embedding(max_timestep + 1, embed_dim)
        self.embed_prompt_slot = nn.Embedding(prompt_len, embed_dim)
        # optional direct path: a projection of the whole prompt added to every step token's embedding
        self.prompt_to_steps = nn.Linear(prompt_len * embed_dim, embed_dim) if prompt_to_steps else None
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.gpt = GPT(embed_dim, num_layers, num_heads, dropout, activation)
        self.action_head = GaussianHead(embed_dim, act_dim, stochastic, squash=True)
        self.value_head = nn.Linear(embed_dim, 1)
        self.reward_head = GaussianHead(embed_dim, 1, stochastic)
        self.state_head = GaussianHead(embed_dim, obs_dim, stochastic)
        for module in (self.embed_state, self.embed_action, self.embed_reward, self.embed_time,
                       self.embed_prompt_slot, self.embed_ln, self.action_head, self.value_head,
                       self.reward_head, self.state_head, self.prompt_to_steps):
            if module is not None:
                module.apply(init_weights)

    # ------------------------------------------------------------------------------ tokens
    def embed_prompt(self, prompt: torch.Tensor) -> torch.Tensor:
        """(B, P, H) prompt vectors -> the prefix tokens (B, P, H), or (B, P + 1, H) with [SEP]."""
        slots = self.embed_prompt_slot(torch.arange(prompt.shape[1], device=prompt.device))
        tokens = self.embed_ln(prompt + slots)
        if self.sep is None:
            return tokens
        return torch.cat([tokens, self.embed_ln(self.sep).to(tokens.dtype).expand(len(tokens), 1, -1)], 1)

    def step_bias(self, prompt: torch.Tensor) -> torch.Tensor | None:
        """With ``prompt_to_steps``: (B, H), the prompt's projection every step token adds; else None."""
        return None if self.prompt_to_steps is None else self.prompt_to_steps(prompt.flatten(1))

    def embed_token(self, kind: str, value: torch.Tensor, timesteps: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
        """One token per row: kind 'state' (B, obs_dim), 'action' (B, act_dim) or 'reward' (B,);
        ``bias`` (B, H) from step_bias()."""
        if kind == "reward":
            value = value.unsqueeze(-1)
        embed = {"state": self.embed_state, "action": self.embed_action, "reward": self.embed_reward}[kind]
        x = embed(value) + self.embed_time(timesteps.clamp(0, self.max_timestep))
        if bias is not None:
            x = x + bias
        return self.embed_ln(x).unsqueeze(1)

    def embed_steps(self, states, actions, rewards, timesteps, bias=None) -> torch.Tensor:
        """Interleaved (s, a, r) tokens (B, 3T, H) of T steps; ``bias`` (B, H) from step_bias()."""
        b, t = states.shape[:2]
        time = self.embed_time(timesteps.clamp(0, self.max_timestep))
        if bias is not None:
            time = time + bias[:, None]
        per_step = [self.embed_state(states) + time, self.embed_action(actions) + time,
                    self.embed_reward(rewards.unsqueeze(-1)) + time]
        return self.embed_ln(torch.stack(per_step, dim=2).reshape(b, 3 * t, -1))

    # ------------------------------------------------------------------------------ reading outputs
    def read_state(self, h):
        """Output at s_t -> (action mean, action log-std or None, value)."""
        mean, log_std = self.action_head(h)
        return mean, log_std, self.value_head(h).squeeze(-1)

    def read_action(self, h):
        """Output at a_t -> (reward mean, reward log-std or None), shapes (...)."""
        mean, log_std = self.reward_head(h)
        return mean.squeeze(-1), None if log_std is None else log_std.squeeze(-1)

    def read_reward(self, h):
        """Output at r_t -> (next-state mean, next-state log-std or None)."""
        return self.state_head(h)

    # ------------------------------------------------------------------------------ whole windows
    def forward(self, prompt, states, actions, rewards, timesteps) -> dict:
        """All predictions for a window of T steps behind the prompt (B, P, H). Keys: action_mean,
        action_log_std, value (B, T), reward_mean, reward_log_std (B, T), next_state_mean,
        next_state_log_std (B, T, obs_dim); log-stds are None for deterministic heads."""
        prefix = self.embed_prompt(prompt)
        p = prefix.shape[1]
        steps = self.embed_steps(states, actions, rewards, timesteps, self.step_bias(prompt))
        tokens = torch.cat([prefix, steps], dim=1)
        h = self.gpt(tokens)[:, p:]
        out = {}
        out["action_mean"], out["action_log_std"], out["value"] = self.read_state(h[:, 0::3])
        out["reward_mean"], out["reward_log_std"] = self.read_action(h[:, 1::3])
        out["next_state_mean"], out["next_state_log_std"] = self.read_reward(h[:, 2::3])
        return out

    # ------------------------------------------------------------------------------ decoding
    def new_cache(self, batch_size: int, extra_steps: int = 0, device=None) -> KVCache:
        """A cache for the prompt and a K-step window, plus ``extra_steps`` more steps."""
        max_len = self.prefix_len + 3 * (self.context_len + extra_steps)
        return self.gpt.new_cache(batch_size, max_len, device=device)

    def decode(self, cache: KVCache, prompt, states, actions, rewards, timesteps):
        """Feed new tokens and return the action head's (mean, log_std) for the last state.

        With an empty cache: the prompt and the whole window so far (T steps; the last step's action
        and reward are unknown). Otherwise exactly two steps, the previous and the current, and the
        tokens fed are a_{t-1}, r_{t-1}, s_t.
        """
        steps = self.embed_steps(states, actions, rewards, timesteps, self.step_bias(prompt))[:, :-2]
        if cache.length == 0:
            tokens = torch.cat([self.embed_prompt(prompt), steps], dim=1)
        else:
            if states.shape[1] != 2:
                raise ValueError("decode with a filled cache takes exactly the previous and current step")
            tokens = steps[:, 1:]
        last = torch.tensor([tokens.shape[1] - 1], device=tokens.device)
        mean, log_std, _ = self.read_state(self.gpt(tokens, cache, keep=last)[:, 0])
        return mean, log_std


class CMT(nn.Module):
    """Encoder, adaptor and generator, with the normalisation statistics of rewards and values."""

    def __init__(self, obs_dim: int, act_dim: int, context_len: int = 20, fragment_len: int = 20,
                 prompt_len: int = 4, embed_dim: int = 128, num_layers: int = 3, num_heads: int = 1,
                 encoder_layers: int = 2, encoder_heads: int = 1, dropout: float = 0.1,
                 max_timestep: int = 1000, stochastic: bool = False, activation: str = "relu",
                 adaptor_hidden: int = 256, sep_token: bool = False, task_encoder: bool = False,
                 prompt_to_steps: bool = False, context_steps: int = 0):
        super().__init__()
        if context_steps and not task_encoder:
            raise ValueError("context_steps needs task_encoder=True (two prompts)")
        self.obs_dim, self.act_dim, self.context_len = obs_dim, act_dim, context_len
        self.fragment_len, self.prompt_len, self.embed_dim = fragment_len, prompt_len, embed_dim
        self.condition_on_returns = False  # the prompt, not a return-to-go, steers the policy
        encoder_args = (obs_dim, act_dim, embed_dim, encoder_layers, encoder_heads, dropout, prompt_len,
                        max(fragment_len, context_len), activation)
        self.encoder = TrajectoryEncoder(*encoder_args)
        # meta-RL with two prompts (Section 4.2): F(t | tau) encodes the task prompt
        self.task_encoder = TrajectoryEncoder(*encoder_args) if task_encoder else None
        # the context's own steps next to the task prompt, one token per (s, a, r) step
        self.context_steps = context_steps
        self.embed_context = nn.Linear(obs_dim + act_dim + 1, embed_dim) if context_steps else None
        if self.embed_context is not None:
            self.embed_context.apply(init_weights)
        self.adaptor = Adaptor(embed_dim, adaptor_hidden)
        generator_prompt_len = prompt_len * (2 if task_encoder else 1) + context_steps
        self.generator = Generator(obs_dim, act_dim, context_len, generator_prompt_len, embed_dim,
                                   num_layers, num_heads, dropout, max_timestep, stochastic, activation,
                                   sep_token, prompt_to_steps)
        # rewards and values are predicted normalised; these map them back (set from the dataset)
        for name, value in (("reward_mean", 0.0), ("reward_std", 1.0), ("value_mean", 0.0),
                            ("value_std", 1.0)):
            self.register_buffer(name, torch.tensor(value))
        self.register_buffer("stored_prompt", torch.zeros(prompt_len, embed_dim))
        if task_encoder:  # the task prompt acting uses before it has any context (mean over the data)
            self.register_buffer("stored_task_prompt", torch.zeros(prompt_len + context_steps, embed_dim))

    @property
    def has_task_prompt(self) -> bool:
        return self.task_encoder is not None

    def encode(self, states, actions, rewards, mask) -> torch.Tensor:
        """z = A_e(tau): (B, P, H)."""
        return self.encoder(states, actions, rewards, mask)

    def encode_task(self, states, actions, rewards, mask) -> torch.Tensor:
        """t = F(tau): the task prompt (B, P, H) of a model with a task encoder; with
        ``context_steps`` k, (B, P + k, H): t, then the fragment's first k steps embedded one token
        each (steps past the fragment's end, or padding, are zero)."""
        if self.task_encoder is None:
            raise ValueError("this CMT has no task encoder (task_encoder=False)")
        t = self.task_encoder(states, actions, rewards, mask)
        if not self.context_steps:
            return t
        k = self.context_steps
        steps = torch.cat([states, actions, rewards.unsqueeze(-1)], dim=-1)[:, :k]
        tokens = self.embed_context(steps) * mask[:, :k, None].to(t.dtype)
        missing = k - tokens.shape[1]
        if missing > 0:
            tokens = torch.cat([tokens, tokens.new_zeros(len(tokens), missing, tokens.shape[-1])], dim=1)
        return torch.cat([t, tokens.to(t.dtype)], dim=1)

    def tuned(self, prompt: torch.Tensor) -> torch.Tensor:
        """z' = L(z; xi). With a task encoder ``prompt`` is [z, t] (B, 2P, H), or [z, t, c] with
        ``context_steps``, and only z is tuned."""
        if self.task_encoder is None:
            return self.adaptor(prompt)
        z, task = prompt[:, :self.prompt_len], prompt[:, self.prompt_len:]
        return torch.cat([self.adaptor(z), task], dim=1)

    def normalize_reward(self, r):
        return (r - self.reward_mean) / self.reward_std

    def denormalize_reward(self, r):
        return r * self.reward_std + self.reward_mean

    def denormalize_value(self, v):
        return v * self.value_std + self.value_mean


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float,
             groups: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: -log exp(z_q . z_+ / alpha) / sum_i exp(z_q . z_i / alpha), averaged over anchors.

    Row i of ``anchors`` and of ``positives`` come from the same trajectory; every other row of
    ``positives`` is a negative for anchor i. Prompts are flattened and L2-normalised first (cosine
    similarity, as SimCLR/MoCo; Eq. 3's raw dot product lets the loss fall by inflating norms).
    ``groups`` (B,) marks rows drawn from the same trajectory: such off-diagonal pairs are not
    counted as negatives.
    """
    a = F.normalize(anchors.flatten(1).float(), dim=1)
    p = F.normalize(positives.flatten(1).float(), dim=1)
    logits = a @ p.T / temperature
    if groups is not None:
        same = groups[:, None] == groups[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
