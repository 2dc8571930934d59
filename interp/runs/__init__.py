"""Re-running the model for an analysis (ablations, blocking, patching): the one place that does.

Analyses stay pure (they build hooks and score frames); the CLI, the report and the experiments
call these with a live model, so all show the same numbers from the same code.
"""
