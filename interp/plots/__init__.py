"""Matplotlib figures (Agg backend) drawn from analysis frames."""
