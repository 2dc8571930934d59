"""Surveys: statistics of a model over a whole corpus, in constant memory (see run.survey)."""

from interp.survey.run import survey

__all__ = ["survey"]
