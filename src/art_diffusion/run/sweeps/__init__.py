"""Hydra multiruns: what a sweep varies and its job directory names (record), one table of all its jobs when it
ends (summary)."""
