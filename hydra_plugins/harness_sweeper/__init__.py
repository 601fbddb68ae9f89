"""The harness sweeper plugin (harness_sweeper.py); Hydra scans this package at startup."""
