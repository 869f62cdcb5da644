"""seqrl: offline reinforcement learning as sequence modelling."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seqrl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from seqrl.errors import ConfigError, DatasetError, SeqrlError, UnknownNameError

__all__ = ["__version__", "SeqrlError", "DatasetError", "UnknownNameError", "ConfigError"]
