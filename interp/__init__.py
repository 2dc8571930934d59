"""interp: follow one token through a transformer and measure every step.

import interp
model = interp.load()                       # SmolLM2-135M, offline
trace = interp.trace(model, "The capital of France is")
trace.residual                              # long-form pandas frames
interp.patching(model, "The Eiffel Tower is in the city of", "The Colosseum is in the city of",
                answer=" Paris", wrong=" Rome").frames["resid"]   # activation patching
"""

import importlib
import sys
import types

from interp.errors import InterpError

# Imported on first use, so that `interp --help` and `import interp.errors` skip torch.
_LAZY = {
    "load": ("interp.models", "load"),
    "trace": ("interp.trace", "trace"),
    "Trace": ("interp.trace", "Trace"),
    "Sampling": ("interp.trace", "Sampling"),
    "prompts": ("interp.prompts", None),
    "patching": ("interp.runs.patching", "patching"),
    "survey": ("interp.survey", "survey"),
    "features": ("interp.features", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing the submodule interp.trace (or interp.survey) binds it here; the name is
        # the function.
        if name in ("trace", "survey") and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["load", "trace", "Trace", "survey", "Sampling", "prompts", "patching", "features",
           "InterpError"]  # fmt: skip
