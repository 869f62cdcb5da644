"""Neural networks; they know nothing of datasets or environments."""

from seqrl.models.cmt import CMT
from seqrl.models.decision_transformer import DecisionTransformer
from seqrl.models.gpt import GPT, KVCache
from seqrl.models.mlp import MLPPolicy

__all__ = ["GPT", "KVCache", "DecisionTransformer", "MLPPolicy", "CMT"]
