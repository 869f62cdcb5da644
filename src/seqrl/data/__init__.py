"""Data layer: trajectories, loaders and exporters, segment sampling."""

from seqrl.data.d4rl import load_d4rl, save_d4rl
from seqrl.data.minari_io import load_minari, minari_root, save_minari
from seqrl.data.sampler import SegmentBatch, SegmentSampler
from seqrl.data.sources import DATASET_NAMES, dataset_info, load_source, minari_id_for
from seqrl.data.trajectories import TrajectoryDataset, returns_to_go

__all__ = ["TrajectoryDataset", "returns_to_go", "load_d4rl", "save_d4rl", "load_minari", "save_minari",
           "minari_root", "SegmentBatch", "SegmentSampler", "DATASET_NAMES", "dataset_info",
           "load_source", "minari_id_for"]
