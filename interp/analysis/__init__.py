"""Analyses: pure functions from captured tensors to long-form pandas frames."""
