"""Behaviour cloning: an MLP regresses the dataset's actions from states (mean squared error).

The baseline of the DT and CMT tables. ``top_fraction`` < 1 gives %BC (DT paper, Section 5.1): cloning
only the episodes with the highest returns. Defaults follow CORL's BC (256x2 MLP, batch 256, lr 3e-4),
with no warm-up and no gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

from seqrl.algos.base import Algorithm, OptimConfig, best_fraction
from seqrl.data.sampler import SegmentSampler
from seqrl.models import MLPPolicy


@dataclass
class BCConfig(OptimConfig):
    batch_size: int = 256
    """transitions per update"""
    learning_rate: float = 3e-4
    """AdamW learning rate"""
    warmup_steps: int = 0
    """linear warm-up steps"""
    grad_clip: float = 0.0
    """gradient-norm clip (0: none)"""
    hidden_dim: int = 256
    """MLP width"""
    num_layers: int = 2
    """hidden layers"""
    dropout: float = 0.0
    """dropout after each hidden layer"""
    top_fraction: float = 1.0
    """clone this fraction of episodes with the highest returns (%BC)"""
    eval_precision: str = "fp32"
    """fp32 or bf16: precision of evaluation rollouts, as DT"""


class BehaviourCloning(Algorithm):
    name = "bc"
    Config = BCConfig

    def __init__(self, config: BCConfig, dataset, seed: int = 0, device="cpu"):
        super().__init__(config, dataset, seed, device)
        data = best_fraction(dataset, config.top_fraction)
        # windows of one step are single transitions
        self.sampler = SegmentSampler(data, context_len=1, batch_size=config.batch_size, seed=seed)
        self.model_kwargs = dict(obs_dim=dataset.obs_dim, act_dim=dataset.act_dim,
                                 hidden_dim=config.hidden_dim, num_layers=config.num_layers,
                                 dropout=config.dropout)
        self.model = MLPPolicy(**self.model_kwargs).to(self.device)

    def loss(self):
        batch = self.sampler.sample().to_torch(self.device)
        preds = self.model(batch["observations"][:, 0])
        loss = ((preds - batch["actions"][:, 0]) ** 2).mean()
        return loss, {}

    def policy_spec(self) -> dict:
        return {"model_class": "MLPPolicy", "model_kwargs": dict(self.model_kwargs),
                "obs_mean": self.sampler.obs_mean.tolist(), "obs_std": self.sampler.obs_std.tolist(),
                "eval_precision": self.config.eval_precision}
