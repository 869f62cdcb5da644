"""A small causal GPT: pre-LayerNorm blocks, fused attention, and a key/value cache for rollouts.

The transformer only sees token embeddings: what a token is (return, state, action) and where it is
(timestep or position) is added by the model that wraps it (see ``decision_transformer.py``). So this
file knows nothing about reinforcement learning.

Incremental decoding writes each new token's keys and values into a preallocated ``KVCache`` and
attends over everything cached so far; feeding a sequence in pieces gives the same outputs as feeding it
whole (tested to float tolerance in tests/test_models.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout; on the CPU with a cheaper mask than torch's.

    torch's CPU ``bernoulli_`` costs about 7 ns per element, which at the DT paper's size is a sixth of a
    whole training update (10 dropout sites). Here one 64-bit draw of torch's seeded generator gives four
    16-bit uniform integers, and an element is kept when its integer is at least round(p * 2^16). So the
    drop probability is p rounded to a multiple of 2^-16 (0.1 -> 0.1000061), kept elements are scaled by
    1 / (1 - that probability) so the expectation is exact, and ``torch.manual_seed`` fixes the masks as
    before. Other devices use ``F.dropout``, whose fused kernels are already cheap.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    threshold = round(p * 65536)
    if threshold >= 65536:
        return x * 0.0
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None).view(torch.int16)
    keep = bits[:n].view(x.shape) >= threshold - 32768          # int16 + 32768 is uniform on [0, 2^16)
    return x * (keep * (65536 / (65536 - threshold))).to(x.dtype)


class Dropout(nn.Module):
    """``nn.Dropout`` with the cheaper CPU mask of ``dropout``."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              dropout_p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with dropout on the weights; ``mask`` (Tq, Tk) is True where a
    query may attend. SDPA unless dropout is on in a CPU run: SDPA then falls back to its plain-math
    path with torch's costly CPU mask, and this is the same math with ``dropout``'s mask."""
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))    # (B, nh, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return dropout(scores.softmax(dim=-1), dropout_p, True) @ v


class KVCache:
    """Keys and values of every layer for B sequences, preallocated for ``max_len`` tokens.

    All sequences in the batch share one length (they are decoded in lockstep). ``select`` keeps some
    rows, e.g. when some episodes of a batched rollout have ended.
    """

    def __init__(self, num_layers: int, batch_size: int, num_heads: int, max_len: int, head_dim: int,
                 device=None, dtype=torch.float32):
        shape = (num_layers, batch_size, num_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.max_len = max_len

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (a bool mask or an index tensor)."""
        self.keys = self.keys[:, rows]
        self.values = self.values[:, rows]

    def clear(self) -> None:
        self.length = 0


class SharedPrefixCache:
    """A cache for many continuations of a few sequences, as in tree search.

    ``prefix`` holds the keys and values of B sequences (a filled ``KVCache``); the cache rows are
    continuations laid out sequence-major: rows b*R .. b*R + R - 1 continue sequence b. Only the
    continuations' own tokens are stored per row, so ``select`` (keeping, repeating or reordering rows
    within their sequence) copies a few tokens instead of the whole prefix; attention reads the
    prefix once per sequence for all its R rows (one batched matmul) and merges it with each row's
    own tokens in one softmax. Equal to a ``KVCache`` holding prefix + continuation in every row
    (tests/test_cmt.py checks the planner built on it against brute force).
    """

    def __init__(self, prefix: KVCache, max_new: int):
        n = prefix.length
        self.prefix_keys = prefix.keys[:, :, :, :n]
        self.prefix_values = prefix.values[:, :, :, :n]
        layers, b, nh, _, hd = self.prefix_keys.shape
        self.num_sequences = b
        self.keys = self.prefix_keys.new_zeros(layers, b, nh, max_new, hd)
        self.values = self.prefix_keys.new_zeros(layers, b, nh, max_new, hd)
        self.length = 0
        self.max_len = max_new

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (indices, grouped by sequence: the same count for every sequence)."""
        if len(rows) % self.num_sequences:
            raise ValueError("rows must keep the same number of continuations of every sequence")
        self.keys = self.keys[:, rows, :, :self.max_len]
        self.values = self.values[:, rows, :, :self.max_len]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store the new tokens' k, v (rows, nh, t, hd) and return attention outputs for q."""
        rows, nh, t, hd = q.shape
        b, r = self.num_sequences, rows // self.num_sequences
        start, end = self.length, self.length + t
        if end > self.max_len:
            raise RuntimeError(f"shared-prefix cache overflow: {end} tokens > {self.max_len}")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        kp, vp = self.prefix_keys[layer], self.prefix_values[layer]            # (B, nh, Lp, hd)
        ks, vs = self.keys[layer, :, :, :end], self.values[layer, :, :, :end]  # (rows, nh, end, hd)
        scale = 1.0 / math.sqrt(hd)
        grouped = q.view(b, r, nh, t, hd).transpose(1, 2).reshape(b, nh, r * t, hd)
        s_prefix = (grouped @ kp.transpose(-1, -2)).view(b, nh, r, t, -1).transpose(1, 2)
        s_prefix = s_prefix.reshape(rows, nh, t, -1) * scale                    # (rows, nh, t, Lp)
        s_own = (q @ ks.transpose(-1, -2)) * scale                              # (rows, nh, t, end)
        if t > 1:  # causal among the new tokens
            allowed = torch.arange(end, device=q.device)[None, :] <= start + torch.arange(t, device=q.device)[:, None]
            s_own = s_own.masked_fill(~allowed, float("-inf"))
        weights = torch.cat([s_prefix, s_own], dim=-1).softmax(dim=-1)
        w_prefix, w_own = weights.split([kp.shape[2], end], dim=-1)
        w_prefix = w_prefix.reshape(b, r, nh, t, -1).transpose(1, 2).reshape(b, nh, r * t, -1)
        y_prefix = (w_prefix @ vp).view(b, nh, r, t, hd).transpose(1, 2).reshape(rows, nh, t, hd)
        return y_prefix + w_own @ vs


class CausalSelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.attn_dropout = dropout
        self.resid_dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, H) -> (B, T, H), or (B, len(keep), H) for only the queries at positions ``keep``
        (keys and values still come from every token)."""
        b, t, h = x.shape
        nh, hd = self.num_heads, h // self.num_heads
        w_q, w_kv = self.qkv.weight.split([h, 2 * h])
        b_q, b_kv = self.qkv.bias.split([h, 2 * h])
        x_q = x if keep is None else x[:, keep]
        q = F.linear(x_q, w_q, b_q).view(b, x_q.shape[1], nh, hd).transpose(1, 2)  # (B, nh, Tq, hd)
        k, v = (z.view(b, t, nh, hd).transpose(1, 2) for z in F.linear(x, w_kv, b_kv).split(h, dim=2))
        if isinstance(cache, SharedPrefixCache):
            y = cache.attend(layer, q.to(cache.keys.dtype), k, v).transpose(1, 2).reshape(b, t, h)
            return self.resid_dropout(self.proj(y.to(x.dtype)))
        start = 0
        if cache is not None:
            start, end = cache.length, cache.length + t
            if end > cache.max_len:
                raise RuntimeError(f"KV cache overflow: {end} tokens > {cache.max_len}")
            cache.keys[layer, :, :, start:end] = k
            cache.values[layer, :, :, start:end] = v
            k, v = cache.keys[layer, :, :, :end], cache.values[layer, :, :, :end]  # (B, nh, end, hd)
            q = q.to(k.dtype)                             # attention in the cache's precision
        p = self.attn_dropout if self.training else 0.0
        if keep is None and start == 0 and (p == 0.0 or x.device.type != "cpu"):
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif q.shape[2] == 1 and (keep is None or int(keep[-1]) == t - 1):
            y = attention(q, k, v, None, p)                            # the newest token sees all
        else:  # query j sits at position start + (keep[j] or j) and sees keys up to there
            q_pos = start + (torch.arange(t, device=x.device) if keep is None else keep.to(x.device))
            mask = torch.arange(k.shape[2], device=x.device)[None, :] <= q_pos[:, None]
            y = attention(q, k, v, mask, p)
        y = y.to(x.dtype).transpose(1, 2).reshape(b, x_q.shape[1], h)
        return self.resid_dropout(self.proj(y))


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float, activation: str = "relu"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, num_heads, dropout)
        self.ln_2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), ACTIVATIONS[activation](),
                                 nn.Linear(4 * embed_dim, embed_dim), Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        a = self.attn(self.ln_1(x), cache, layer, keep)
        x = (x if keep is None else x[:, keep]) + a
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A stack of causal blocks over token embeddings: (B, T, H) -> (B, T, H)."""

    def __init__(self, embed_dim: int = 128, num_layers: int = 3, num_heads: int = 1,
                 dropout: float = 0.1, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got '{activation}'")
        self.embed_dim, self.num_layers, self.num_heads = embed_dim, num_layers, num_heads
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, dropout, activation)
                                    for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(embed_dim)
        self.apply(init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * num_layers))

    def new_cache(self, batch_size: int, max_len: int, device=None, dtype=torch.float32) -> KVCache:
        """A cache in ``dtype``: fp32 also for a bf16 model, whose attention then runs in fp32 over
        full-precision keys (on the CPU bf16 gains nothing at decoding's shapes:
        benchmarks/results/decode_attention.md)."""
        return KVCache(self.num_layers, batch_size, self.num_heads, max_len,
                       self.embed_dim // self.num_heads, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, H) -> (B, T, H). With ``keep`` (token indices) only those outputs are computed: the
        last block then runs its queries, residual and MLP for them alone, which is exact under causal
        attention and saves work when a model reads only some tokens (DT reads the state tokens)."""
        t = x.shape[1]
        x = self.drop(x)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, keep if i == last else None)
        if cache is not None:
            cache.length += t
        return self.ln_f(x)


def init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay matrices of Linear layers only, not biases, norms or embeddings
    (nanoGPT's and the DT reference's rule)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
