"""optmodel: Hydra-composed post-training optimization of large language models."""

__version__ = "0.1.0"
