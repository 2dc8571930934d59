"""Every value a user hands in, checked once: a clean value back, or one `InterpError` line.

The CLI (through argparse `type=` functions) and the public API (`interp.trace`, `Sampling`,
the model loaders) call the same checks, so both refuse the same mistakes with the same words.
No heavy imports here: `interp --help` loads this module.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from interp.errors import InterpError

MAX_SEED = 2**64 - 1


def text(value: Any, what: str = "the prompt") -> str:
    """A non-empty str of valid Unicode. Undecodable argv bytes arrive as lone surrogates
    (Python's surrogateescape); they are named as the bytes they were."""
    if not isinstance(value, str):
        raise InterpError(f"{what} must be text, not {type(value).__name__}")
    bad = next((i for i, ch in enumerate(value) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        code = ord(value[bad])
        shown = f"byte 0x{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise InterpError(f"{what} is not valid UTF-8 ({shown} at character {bad})")
    if not value.strip():
        raise InterpError(f"{what} is empty")
    return value


def number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:  # fmt: skip
    """A finite float within [low, high] (an end is excluded when `*_open`)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InterpError(f"{name} must be a number, not {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InterpError(f"{name} must be a finite number, not {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise InterpError(f"{name} must be {'>' if low_open else '>='} {low:g}, not {value:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise InterpError(f"{name} must be {'<' if high_open else '<='} {high:g}, not {value:g}")
    return value


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An int within [low, high]; a float is accepted only when integral (5.0, never 5.7)."""
    if isinstance(value, bool):
        raise InterpError(f"{name} must be an integer, not {value!r}")
    if not isinstance(value, Integral):
        if isinstance(value, Real) and math.isfinite(value) and float(value).is_integer():
            value = int(value)
        else:
            raise InterpError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise InterpError(f"{name} must be >= {low}, not {value}")
    if high is not None and value > high:
        raise InterpError(f"{name} must be <= {high}, not {value}")
    return value


def seed(value: Any, name: str = "seed") -> int:
    return integer(value, name, low=0, high=MAX_SEED)


def context(n_prompt: int, max_new_tokens: int, n_ctx: int) -> None:
    """Prompt + continuation must fit the model's context: checked before any forward pass."""
    if n_prompt + max_new_tokens > n_ctx:
        extra = f" + {max_new_tokens} new tokens" if max_new_tokens else ""
        raise InterpError(
            f"the prompt has {n_prompt} tokens{extra}; the model's context is {n_ctx} tokens"
        )


def token_ids(ids, d_vocab: int, name: str = "token ids"):
    """A 1-D long tensor of ids in [0, d_vocab): float ids must be integral, 1-D only."""
    import torch

    if not isinstance(ids, torch.Tensor):
        raise InterpError(f"{name} must be a tensor, not {type(ids).__name__}")
    if ids.ndim != 1:
        raise InterpError(f"{name} must be 1-D (or a 2-D batch), not {ids.ndim}-D")
    if ids.numel() == 0:
        raise InterpError("the prompt is empty")
    if ids.is_floating_point() or ids.is_complex():
        if ids.is_complex() or not bool(torch.isfinite(ids).all() & (ids == ids.round()).all()):
            raise InterpError(f"{name} must be integers, not {ids.dtype} values such as 5.7")
    elif ids.dtype == torch.bool:
        raise InterpError(f"{name} must be integers, not booleans")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= d_vocab:
        raise InterpError(f"{name} must lie in [0, {d_vocab}); got {low}..{high}")
    return ids.long()


def output_path(value: Any) -> Path:
    """A file path the user asked us to write, checked before any work: encodable, not a
    directory, and under a writable directory (missing directories between are created)."""
    raw = os.fsdecode(value) if isinstance(value, bytes | os.PathLike) else value
    if not isinstance(raw, str) or not raw:
        raise InterpError("the output path is empty")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise InterpError(f"the output path {raw!r} is not valid UTF-8") from None
    path = Path(raw)
    # The nearest existing ancestor decides: missing directories below it are created on write.
    ancestor = next(a for a in (path.parent, *path.parent.parents) if a.exists())
    if not ancestor.is_dir():
        raise InterpError(f"cannot write {raw}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InterpError(f"cannot write {raw}: the directory {ancestor} is not writable")
    if path.is_dir():
        raise InterpError(f"cannot write {raw}: it is a directory")
    return path


# config.json fields that must be positive integers, HF and TL-native spellings.
_POSITIVE_INTS = (
    "hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "intermediate_size", "max_position_embeddings", "head_dim",
    "num_experts", "num_local_experts", "num_experts_per_tok",
    "d_model", "d_vocab", "n_layers", "n_heads", "d_head", "d_mlp", "n_ctx", "n_key_value_heads",
)  # fmt: skip
# ... of which these may not be null either (the optional ones may: HF fills them in).
_REQUIRED = {"hidden_size", "vocab_size", "num_hidden_layers", "d_model", "d_vocab", "n_layers"}


def config_fields(config: dict, source: Path | str) -> dict:
    """The types of the fields every loader reads; a wrong one is one line naming it."""
    for key in _POSITIVE_INTS:
        if key not in config or (config[key] is None and key not in _REQUIRED):
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InterpError(f"{source}: {key} must be a positive integer, not {value!r}")
    if "architectures" in config:
        arch = config["architectures"]
        if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
            raise InterpError(f"{source}: architectures must be a list of names, not {arch!r}")
    return config
