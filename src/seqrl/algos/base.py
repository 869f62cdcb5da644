"""What every algorithm shares: optimiser settings and the interface the trainer drives.

An algorithm owns its model and its data sampling and knows its loss; the trainer (seqrl.train) owns
the loop, optimiser, schedule, logging, evaluation and checkpoints. A new algorithm is one file in this
package that subclasses ``Algorithm`` and registers itself in ``seqrl.algos.ALGORITHMS``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from seqrl.data.trajectories import TrajectoryDataset
from seqrl.errors import ConfigError


@dataclass
class OptimConfig:
    batch_size: int = 64
    """segments (or transitions) per update"""
    learning_rate: float = 1e-4
    """AdamW peak learning rate"""
    weight_decay: float = 1e-4
    """AdamW weight decay, applied to Linear weight matrices only"""
    betas: tuple = (0.9, 0.999)
    """AdamW betas"""
    warmup_steps: int = 10_000
    """linear learning-rate warm-up from 0 over this many updates, then constant"""
    grad_clip: float = 0.25
    """clip the global gradient norm to this (0: no clipping)"""
    bf16: bool = False
    """bfloat16 autocast for the forward pass (pays on GPUs and on CPUs with AMX; see docs/training.md)"""
    compile: bool = False
    """torch.compile the model for training"""


def apply_overrides(config, overrides: list[str] | dict):
    """Set config fields from ``key=value`` strings (``--set``), converting to each field's type."""
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    known = {f.name: f for f in fields(config)}
    for key, value in items:
        if key not in known:
            raise ConfigError(f"unknown setting '{key}' (settings: {', '.join(sorted(known))})")
        setattr(config, key, _convert(key, value, getattr(config, key), known[key].type))
    if "eval_precision" in known:  # checked now, not at the first evaluation
        from seqrl.policy import eval_dtype

        eval_dtype(config.eval_precision)
    return config


def _split(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    return key.strip(), value.strip()


def _convert(key: str, value, current, annotation):
    if not isinstance(value, str):
        return value
    kind = type(current) if current is not None else None
    text = value.lower()
    try:
        if kind is bool:
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if text in ("none", "null") and (current is None or "None" in str(annotation)):
            return None
        if kind is int or (current is None and "int" in str(annotation)):
            return int(value)
        if kind is float:
            return float(value)
        if kind is tuple:
            return tuple(float(v) for v in value.strip("()").split(","))
        return value
    except ValueError:
        raise ConfigError(f"setting '{key}': cannot read '{value}' as {kind.__name__ if kind else annotation}") \
            from None


# Ranges of the settings that algorithms share by name (checked before anything is built, so a bad
# --set value is a one-line error instead of a failure deep inside torch).
_AT_LEAST_ONE = ("batch_size", "context_len", "embed_dim", "num_layers", "num_heads", "max_timestep",
                 "encoder_layers", "encoder_heads", "fragment_len", "prompt_len", "adaptor_hidden",
                 "hidden_dim", "improve_steps", "beam_width", "plan_batch", "plan_candidates",
                 "plan_horizon", "relabel_states")
_AT_LEAST_ZERO = ("warmup_steps", "improve_warmup_steps", "weight_decay", "grad_clip", "behaviour_coef",
                  "contrastive_coef", "reward_coef", "state_coef", "value_coef", "plan_noise")
_ABOVE_ZERO = ("learning_rate", "improve_learning_rate", "return_scale", "temperature")
_FRACTIONS = ("top_fraction", "prompt_top_fraction")                       # (0, 1]


def check_settings(config) -> None:
    """ConfigError for a setting out of its range (any config; fields it lacks are skipped)."""
    import math

    def value(name):
        return getattr(config, name, None)

    for name in _AT_LEAST_ONE + _AT_LEAST_ZERO + _ABOVE_ZERO + _FRACTIONS + ("dropout", "discount"):
        v = value(name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, got {v}")
    for name in _AT_LEAST_ONE:
        if value(name) is not None and value(name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value(name)}")
    for name in _AT_LEAST_ZERO:
        if value(name) is not None and value(name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {value(name)}")
    for name in _ABOVE_ZERO:
        if value(name) is not None and value(name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {value(name)}")
    for name in _FRACTIONS:
        if value(name) is not None and not 0 < value(name) <= 1:
            raise ConfigError(f"{name} must be in (0, 1], got {value(name)}")
    if value("dropout") is not None and not 0 <= value("dropout") < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {value('dropout')}")
    if value("discount") is not None and not 0 <= value("discount") <= 1:
        raise ConfigError(f"discount must be in [0, 1], got {value('discount')}")
    betas = value("betas")
    if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
        raise ConfigError(f"betas must be two numbers in [0, 1), e.g. 0.9,0.999; got {betas}")
    for heads in ("num_heads", "encoder_heads"):
        if value(heads) is not None and value("embed_dim") is not None and value("embed_dim") % value(heads):
            raise ConfigError(f"embed_dim ({value('embed_dim')}) must be divisible by {heads} "
                              f"({value(heads)})")
    from seqrl.models.decision_transformer import TIMESTEP_EMBEDDINGS
    from seqrl.models.gpt import ACTIVATIONS

    for name, choices in (("activation", tuple(ACTIVATIONS)), ("timestep_embedding", TIMESTEP_EMBEDDINGS)):
        if value(name) is not None and value(name) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got '{value(name)}'")
    keep, k = value("eval_keep"), value("context_len")
    if keep is not None and k is not None and not 0 <= keep <= k - 1:
        raise ConfigError(f"eval_keep must be between 0 and context_len - 1 = {k - 1}, got {keep}")


class Algorithm:
    """The trainer's view of an algorithm. Subclasses set ``name`` and ``Config`` and build
    ``self.model`` and ``self.sampler``; ``loss`` draws its own batch and returns (loss, {metric: value})
    where the metrics are extra columns named in ``metric_names``."""

    name = "base"
    Config = OptimConfig

    def __init__(self, config, dataset: TrajectoryDataset, seed: int = 0, device="cpu"):
        check_settings(config)
        self.config, self.dataset, self.seed = config, dataset, seed
        self.device = torch.device(device)
        self.model: torch.nn.Module

    metric_names: tuple[str, ...] = ()

    def loss(self) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def policy_spec(self) -> dict:
        """What ``seqrl.policy.Policy`` needs to act, besides the weights (plain data)."""
        raise NotImplementedError

    def prepare_policy(self) -> None:
        """Called before every evaluation and checkpoint (CMT computes its stored prompt here)."""

    def summary_extras(self) -> dict:
        """Entries this algorithm adds to summary.json."""
        return {}

    def evaluate_policy(self, policy, run) -> list[dict] | None:
        """An evaluation protocol of the algorithm's own (meta-RL: held-out tasks); None: the standard
        one (``run.eval_episodes`` episodes per target return in ``run.env_id``)."""
        return None

    def state_dict(self) -> dict:
        """Algorithm state beyond the model (the sampler's generator), for resuming."""
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])


def best_fraction(dataset: TrajectoryDataset, fraction: float) -> TrajectoryDataset:
    """The best ``fraction`` of episodes by return (%BC's data filter); all of them at 1.0."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"top_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    k = max(1, int(round(fraction * dataset.num_episodes)))
    return dataset.top_k(k)
