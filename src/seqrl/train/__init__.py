"""The shared trainer, run directories and checkpoints."""

from seqrl.train.api import train

__all__ = ["train"]
