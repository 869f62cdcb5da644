"""Vectorised evaluation with incremental decoding, normalised scores."""

from seqrl.eval.evaluator import evaluate, evaluate_targets

__all__ = ["evaluate", "evaluate_targets"]
