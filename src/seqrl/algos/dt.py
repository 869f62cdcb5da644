"""Decision Transformer (Chen et al. 2021, arXiv:2106.01345), and its %BC-style ablation without returns.

Training (DT paper, Section 3 and Appendix A): sample windows of K steps, embed (R, s, a) per step,
predict each a_t from the output at s_t and minimise the mean squared error over real (unpadded) steps.
Defaults are the paper's MuJoCo settings: K=20, 128 dims, 3 layers, 1 head, dropout 0.1, batch 64,
AdamW lr 1e-4 with weight decay 1e-4, 10k linear warm-up steps, gradient clip 0.25, returns / 1000.

Deviations from the reference code (kzl/decision-transformer), all deliberate:
  * windows are right-padded (seqrl.data.sampler explains why) so no attention mask is needed;
  * the transformer is our pre-LayerNorm GPT, not a modified GPT-2 module (same maths);
  * evaluation caches keys and values (seqrl.policy explains the context rule).
``condition_on_returns=False`` drops the return tokens, and ``top_fraction`` < 1 trains on the best
episodes only: together they are the %BC-style transformer baseline of the DT paper (Section 5.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from seqrl.algos.base import Algorithm, OptimConfig, best_fraction
from seqrl.data.sampler import SegmentSampler
from seqrl.models import DecisionTransformer


@dataclass
class DTConfig(OptimConfig):
    context_len: int = 20
    """K: steps per training window and the longest context at evaluation"""
    embed_dim: int = 128
    """transformer width"""
    num_layers: int = 3
    """transformer blocks"""
    num_heads: int = 1
    """attention heads"""
    dropout: float = 0.1
    """dropout on embeddings, attention and residual branches"""
    activation: str = "relu"
    """MLP activation: relu (DT reference code for gym) or gelu (GPT-2)"""
    timestep_embedding: str = "absolute"
    """absolute (learned episode-timestep embedding, DT), position (learned token position) or none"""
    max_timestep: int = 1000
    """largest episode timestep with its own embedding (later ones share the last)"""
    condition_on_returns: bool = True
    """False: no return-to-go tokens (the %BC-style transformer)"""
    top_fraction: float = 1.0
    """train on this fraction of episodes with the highest returns (%BC filtering)"""
    return_scale: float = 1000.0
    """returns-to-go are divided by this before embedding"""
    eval_keep: int | None = None
    """steps kept when the evaluation context window is full (None: K // 2; K - 1: the reference)"""
    eval_precision: str = "fp32"
    """fp32 or bf16: precision of evaluation rollouts (bf16 acts faster on CPUs with bf16 units)"""


class DecisionTransformerAlgorithm(Algorithm):
    name = "dt"
    Config = DTConfig

    def __init__(self, config: DTConfig, dataset, seed: int = 0, device="cpu"):
        super().__init__(config, dataset, seed, device)
        data = best_fraction(dataset, config.top_fraction)
        self.sampler = SegmentSampler(data, context_len=config.context_len,
                                      batch_size=config.batch_size, return_scale=config.return_scale,
                                      seed=seed)  # normalises with the training data's statistics
        self.model_kwargs = dict(obs_dim=dataset.obs_dim, act_dim=dataset.act_dim,
                                 context_len=config.context_len, embed_dim=config.embed_dim,
                                 num_layers=config.num_layers, num_heads=config.num_heads,
                                 dropout=config.dropout, activation=config.activation,
                                 max_timestep=config.max_timestep,
                                 timestep_embedding=config.timestep_embedding,
                                 condition_on_returns=config.condition_on_returns,
                                 **self.model_extras())
        self.model = DecisionTransformer(**self.model_kwargs).to(self.device)

    def model_extras(self) -> dict:
        """Further DecisionTransformer arguments of a variant (Prompt-DT: its prompt length)."""
        return {}

    def loss(self):
        batch = self.sampler.sample().to_torch(self.device)
        mask = batch["mask"]                                                 # (B, K)
        preds = self.model(batch["observations"], batch["actions"], batch["returns_to_go"],
                           batch["timesteps"])                               # (B, K, act_dim)
        # DT: mean squared action error over real steps only (padding is masked out)
        loss = ((preds - batch["actions"]) ** 2)[mask].mean()
        return loss, {}

    def policy_spec(self) -> dict:
        return {"model_class": "DecisionTransformer", "model_kwargs": dict(self.model_kwargs),
                "obs_mean": self.sampler.obs_mean.tolist(), "obs_std": self.sampler.obs_std.tolist(),
                "return_scale": self.config.return_scale, "eval_keep": self.config.eval_keep,
                "eval_precision": self.config.eval_precision}
