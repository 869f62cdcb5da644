"""Decision Transformer (Chen et al. 2021): a causal GPT over (return-to-go, state, action) tokens.

Each timestep t contributes the tokens R_t, s_t, a_t (or s_t, a_t without return conditioning, the
%BC-style ablation); the action a_t is predicted from the output at s_t, through tanh. The MLPs use ReLU as the DT reference code does for gym. Where a token is
in time comes from one of three embeddings, chosen by ``timestep_embedding``:
  * "absolute": a learned embedding of the episode timestep added to all tokens of that step (DT);
  * "position": a learned embedding of the token's position in the context window (GPT-2 style);
  * "none": no positional information beyond causal order.

``forward`` runs a whole window (training, and the reference full-context evaluation); ``decode`` feeds
the newest tokens to a KV cache and returns the action for the last state, equal to what ``forward``
gives for the same window (the rollout logic lives in ``seqrl.policy``).

Prompt-DT (Xu et al. 2022, arXiv:2206.13499): with ``prompt_len`` P > 0 the window is preceded by a
trajectory prompt of P steps (R*, s*, a*) from a demonstration of the task, embedded by its own layers
(Prompt-DT's separate prompt embeddings, with their own timestep embedding) and read causally like the
rest; the action is still predicted at the window's state tokens only. A prompt step whose mask is False
(a demonstration shorter than P) has zero inputs and timestep 0, as in training.
"""

from __future__ import annotations

import torch
from torch import nn

from seqrl.models.gpt import GPT, KVCache, init_weights

TIMESTEP_EMBEDDINGS = ("absolute", "position", "none")


class DecisionTransformer(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, context_len: int = 20, embed_dim: int = 128,
                 num_layers: int = 3, num_heads: int = 1, dropout: float = 0.1,
                 max_timestep: int = 1000, timestep_embedding: str = "absolute",
                 condition_on_returns: bool = True, activation: str = "relu", prompt_len: int = 0):
        super().__init__()
        if timestep_embedding not in TIMESTEP_EMBEDDINGS:
            raise ValueError(f"timestep_embedding must be one of {TIMESTEP_EMBEDDINGS}, "
                             f"got '{timestep_embedding}'")
        self.obs_dim, self.act_dim, self.context_len = obs_dim, act_dim, context_len
        self.max_timestep = max_timestep
        self.timestep_embedding = timestep_embedding
        self.condition_on_returns = condition_on_returns
        self.tokens_per_step = 3 if condition_on_returns else 2
        self.embed_state = nn.Linear(obs_dim, embed_dim)
        self.embed_action = nn.Linear(act_dim, embed_dim)
        self.embed_return = nn.Linear(1, embed_dim) if condition_on_returns else None
        if timestep_embedding == "absolute":
            self.embed_time = nn.Embedding(max_timestep + 1, embed_dim)
        elif timestep_embedding == "position":
            self.embed_position = nn.Embedding(self.tokens_per_step * context_len, embed_dim)
        self.prompt_len = prompt_len
        self.prompt_tokens = self.tokens_per_step * prompt_len
        if prompt_len > 0:  # Prompt-DT: the prompt's own embeddings
            self.prompt_state = nn.Linear(obs_dim, embed_dim)
            self.prompt_action = nn.Linear(act_dim, embed_dim)
            self.prompt_return = nn.Linear(1, embed_dim) if condition_on_returns else None
            self.prompt_time = nn.Embedding(max_timestep + 1, embed_dim)
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.gpt = GPT(embed_dim, num_layers, num_heads, dropout, activation)
        self.action_head = nn.Sequential(nn.Linear(embed_dim, act_dim), nn.Tanh())
        for module in (self.embed_state, self.embed_action, self.embed_return, self.embed_ln,
                       self.action_head, getattr(self, "embed_time", None),
                       getattr(self, "embed_position", None), getattr(self, "prompt_state", None),
                       getattr(self, "prompt_action", None), getattr(self, "prompt_return", None),
                       getattr(self, "prompt_time", None)):
            if module is not None:
                module.apply(init_weights)

    # ------------------------------------------------------------------------------ tokens
    def embed(self, states, actions, returns_to_go, timesteps, first_position: int = 0) -> torch.Tensor:
        """Interleaved token embeddings (B, n*T, H) of T steps, n = tokens_per_step."""
        b, t = states.shape[:2]
        s, a = self.embed_state(states), self.embed_action(actions)  # (B, T, H)
        per_step = [s, a]
        if self.condition_on_returns:
            per_step.insert(0, self.embed_return(returns_to_go.unsqueeze(-1)))
        if self.timestep_embedding == "absolute":
            time = self.embed_time(timesteps.clamp(0, self.max_timestep))
            per_step = [e + time for e in per_step]
        tokens = torch.stack(per_step, dim=2).reshape(b, self.tokens_per_step * t, -1)
        if self.timestep_embedding == "position":
            positions = torch.arange(first_position, first_position + tokens.shape[1],
                                     device=tokens.device)
            tokens = tokens + self.embed_position(positions)
        return self.embed_ln(tokens)

    def embed_prompt(self, prompt: dict) -> torch.Tensor:
        """Prompt-DT's prompt tokens (B, n*P, H) from a dict of observations (B, P, obs_dim), actions,
        returns_to_go, timesteps and mask (B, P)."""
        if self.prompt_len == 0:
            raise ValueError("this model has no prompt (prompt_len=0)")
        states, mask = prompt["observations"], prompt["mask"]
        if states.shape[1] != self.prompt_len:
            raise ValueError(f"prompt of {states.shape[1]} steps for prompt_len {self.prompt_len}")
        b, p = states.shape[:2]
        keep = mask.unsqueeze(-1).to(states.dtype)
        time = self.prompt_time(torch.where(mask, prompt["timesteps"], 0).clamp(0, self.max_timestep))
        per_step = [self.prompt_state(states * keep), self.prompt_action(prompt["actions"] * keep)]
        if self.condition_on_returns:
            rtg = (prompt["returns_to_go"] * mask).unsqueeze(-1)
            per_step.insert(0, self.prompt_return(rtg))
        tokens = torch.stack([e + time for e in per_step], dim=2).reshape(b, self.tokens_per_step * p, -1)
        return self.embed_ln(tokens)

    def _with_prompt(self, tokens: torch.Tensor, prompt: dict | None) -> torch.Tensor:
        if self.prompt_len == 0:
            if prompt is not None:
                raise ValueError("this model has no prompt (prompt_len=0)")
            return tokens
        if prompt is None:
            raise ValueError("a Prompt-DT model needs its prompt")
        return torch.cat([self.embed_prompt(prompt).to(tokens.dtype), tokens], dim=1)

    def forward(self, states, actions, returns_to_go, timesteps, prompt: dict | None = None
                ) -> torch.Tensor:
        """Action predictions (B, T, act_dim) for a window: states (B, T, obs_dim), actions
        (B, T, act_dim), returns_to_go (B, T), timesteps (B, T); ``prompt`` for Prompt-DT (see
        ``embed_prompt``). Right padding needs no attention mask: under causal attention no real token
        sees a later pad."""
        n, t = self.tokens_per_step, states.shape[1]
        state_tokens = self.prompt_tokens + torch.arange(t, device=states.device) * n + (n - 2)
        tokens = self._with_prompt(self.embed(states, actions, returns_to_go, timesteps), prompt)
        h_state = self.gpt(tokens, keep=state_tokens)
        return self.action_head(h_state)                                      # (B, T, act_dim)

    # ------------------------------------------------------------------------------ decoding
    def new_cache(self, batch_size: int, device=None) -> KVCache:
        """A cache for one context window (K steps, after the prompt if there is one)."""
        return self.gpt.new_cache(batch_size, self.prompt_tokens + self.tokens_per_step * self.context_len,
                                  device=device)

    def decode(self, cache: KVCache, states, actions, returns_to_go, timesteps,
               prompt: dict | None = None) -> torch.Tensor:
        """Feed new tokens to ``cache`` and return the action (B, act_dim) for the last state.

        With an empty cache the arguments hold the whole window so far (T steps, the last one's action
        unknown: prefill). Otherwise they hold exactly two steps, the previous and the current one, and
        the tokens fed are a_{t-1}, R_t, s_t (the previous step's R and s are already cached). A
        Prompt-DT model takes its ``prompt`` at prefill (it goes in front of the window).
        """
        n = self.tokens_per_step
        skip = 0 if cache.length == 0 else n - 1
        if skip and states.shape[1] != 2:
            raise ValueError("decode with a filled cache takes exactly the previous and current step")
        first_position = cache.length - skip - (self.prompt_tokens if skip else 0)
        tokens = self.embed(states, actions, returns_to_go, timesteps, first_position)[:, skip:-1]
        if not skip:
            tokens = self._with_prompt(tokens, prompt)
        last = torch.tensor([tokens.shape[1] - 1], device=tokens.device)
        return self.action_head(self.gpt(tokens, cache, keep=last)[:, 0])
