"""Benchmarking and numerical-stability harness for cross-entropy losses in PyTorch.

`python -m harness` sweeps loss variants over (batch size, class count, dtype, logit scale,
device) and writes one tidy row per (point, variant, mode) into parquet; see README.md.
"""

__version__ = "0.1.0"
