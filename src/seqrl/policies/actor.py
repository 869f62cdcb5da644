"""A SAC actor as plain numpy: the behaviour policies that generate seqrl's datasets.

File layout (safetensors): ``hidden.{i}.weight`` / ``hidden.{i}.bias`` for the ReLU layers, then
``mu.weight``, ``mu.bias``, ``log_std.weight``, ``log_std.bias``; the metadata (strings) holds ``env_id``,
``action_low`` / ``action_high`` (JSON lists), ``log_std_min`` / ``log_std_max`` and anything the trainer
adds (train step, evaluation return). An action is tanh(mu + std * eps), eps ~ N(0, I), rescaled to the
action bounds: the squashed Gaussian of SAC (Haarnoja et al., 2018), sampled as D4RL's datasets were.
Inference needs only numpy, so generating data needs neither torch nor stable-baselines3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqrl.errors import DatasetError


@dataclass
class Actor:
    hidden: list[tuple[np.ndarray, np.ndarray]]  # [(W (out, in), b (out,))] ReLU layers
    mu: tuple[np.ndarray, np.ndarray]
    log_std: tuple[np.ndarray, np.ndarray]
    action_low: np.ndarray
    action_high: np.ndarray
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    metadata: dict = field(default_factory=dict)

    def distribution(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pre-squash mean and std for a batch of observations (B, obs_dim)."""
        h = np.asarray(obs, dtype=np.float32)
        for w, b in self.hidden:
            h = np.maximum(h @ w.T + b, 0.0)
        mu = h @ self.mu[0].T + self.mu[1]
        log_std = np.clip(h @ self.log_std[0].T + self.log_std[1], self.log_std_min, self.log_std_max)
        return mu, np.exp(log_std)

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None,
            deterministic: bool = False) -> np.ndarray:
        """Actions (B, act_dim) for observations (B, obs_dim): sampled, or tanh(mean) if deterministic."""
        mu, std = self.distribution(obs)
        pre = mu if deterministic else mu + std * rng.standard_normal(mu.shape, dtype=np.float32)
        squashed = np.tanh(pre)
        return (self.action_low + 0.5 * (squashed + 1.0) * (self.action_high - self.action_low)).astype(np.float32)


def load_actor(path: str | Path) -> Actor:
    from safetensors.numpy import load_file
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such policy file: {path}")
    tensors = load_file(str(path))
    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata() or {})
    hidden = []
    i = 0
    while f"hidden.{i}.weight" in tensors:
        hidden.append((tensors[f"hidden.{i}.weight"], tensors[f"hidden.{i}.bias"]))
        i += 1
    parsed = {k: _parse(v) for k, v in meta.items()}
    return Actor(hidden=hidden, mu=(tensors["mu.weight"], tensors["mu.bias"]),
                 log_std=(tensors["log_std.weight"], tensors["log_std.bias"]),
                 action_low=np.asarray(parsed.pop("action_low"), np.float32),
                 action_high=np.asarray(parsed.pop("action_high"), np.float32),
                 log_std_min=float(parsed.pop("log_std_min", -20.0)),
                 log_std_max=float(parsed.pop("log_std_max", 2.0)), metadata=parsed)


def save_actor(actor: Actor, path: str | Path) -> None:
    """Write atomically (temporary file, then rename)."""
    import os

    from safetensors.numpy import save_file

    tensors = {}
    for i, (w, b) in enumerate(actor.hidden):
        tensors[f"hidden.{i}.weight"], tensors[f"hidden.{i}.bias"] = w, b
    tensors["mu.weight"], tensors["mu.bias"] = actor.mu
    tensors["log_std.weight"], tensors["log_std.bias"] = actor.log_std
    meta = {k: json.dumps(v) for k, v in actor.metadata.items()}
    meta.update(action_low=json.dumps(actor.action_low.tolist()),
                action_high=json.dumps(actor.action_high.tolist()),
                log_std_min=json.dumps(actor.log_std_min), log_std_max=json.dumps(actor.log_std_max))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp),
              metadata=meta)
    os.chmod(tmp, 0o644)  # safetensors creates 0600 files; shipped actors must be readable by all
    os.replace(tmp, path)


def save_sb3_actor(model, path: str | Path, env_id: str, metadata: dict | None = None) -> None:
    """Extract the actor of a stable-baselines3 SAC model into seqrl's layout."""
    actor = model.actor
    linears = [m for m in actor.latent_pi if hasattr(m, "weight")]

    def np_(t):
        return t.detach().cpu().numpy().astype(np.float32)

    space = model.action_space
    save_actor(Actor(hidden=[(np_(m.weight), np_(m.bias)) for m in linears],
                     mu=(np_(actor.mu.weight), np_(actor.mu.bias)),
                     log_std=(np_(actor.log_std.weight), np_(actor.log_std.bias)),
                     action_low=np.asarray(space.low, np.float32),
                     action_high=np.asarray(space.high, np.float32),
                     metadata={"env_id": env_id, **(metadata or {})}), path)


def save_sbx_actor(model, path: str | Path, env_id: str, metadata: dict | None = None) -> None:
    """Extract the actor of an SBX (stable-baselines3 in JAX) SAC model into seqrl's layout.

    SBX's ``SquashedGaussianActor`` is flax Dense layers in call order: the ReLU hidden layers, then the
    mean and the log-std heads, with the same clipping of log-std as stable-baselines3. Flax stores a
    kernel as (in, out); seqrl's layout is (out, in).
    """
    params = model.policy.actor_state.params["params"]
    dense = [params[f"Dense_{i}"] for i in range(len(params))]

    def layer(p):
        return (np.asarray(p["kernel"], np.float32).T, np.asarray(p["bias"], np.float32))

    space = model.action_space
    save_actor(Actor(hidden=[layer(p) for p in dense[:-2]], mu=layer(dense[-2]), log_std=layer(dense[-1]),
                     action_low=np.asarray(space.low, np.float32),
                     action_high=np.asarray(space.high, np.float32),
                     metadata={"env_id": env_id, **(metadata or {})}), path)


def _parse(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value
