"""Every value a user hands in, checked once: a clean value back, or one `InterpError` line.

The CLI (through argparse `type=` functions) and the public API (`interp.trace`, `Sampling`,
the model loaders) call the same checks, so both refuse the same mistakes with the same words.
No heavy imports here: `interp --help` loads this module.
"""

from __future__ import annotations

import json
import math
import os
import re
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


MAX_LAYERS = 4096  # far past any model; a config beyond it is a typo or an attack


def config_fields(config: dict, source: Path | str) -> dict:
    """The types of the fields every loader reads; a wrong one is one line naming it."""
    for key in _POSITIVE_INTS:
        if key not in config or (config[key] is None and key not in _REQUIRED):
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InterpError(f"{source}: {key} must be a positive integer, not {value!r}")
    for key in ("num_hidden_layers", "n_layers"):
        if isinstance(config.get(key), int) and config[key] > MAX_LAYERS:
            raise InterpError(f"{source}: {key} is {config[key]:,}; at most {MAX_LAYERS:,}")
    if isinstance(config.get("text_config"), dict):  # multimodal checkpoints nest the LM's
        config_fields(config["text_config"], f"{source} (text_config)")
    per_token = config.get("num_experts_per_tok")
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        experts = config.get(key)
        if isinstance(per_token, int) and isinstance(experts, int) and per_token > experts:
            raise InterpError(
                f"{source}: num_experts_per_tok ({per_token}) exceeds {key} ({experts}): a "
                "token cannot choose more experts than exist"
            )
    if "architectures" in config:
        arch = config["architectures"]
        if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
            raise InterpError(f"{source}: architectures must be a list of names, not {arch!r}")
    return config


# -- what a loader reads from a file: text, JSON, fields, tables --------------------------

MAX_JSON_DEPTH = 64  # interp's own files nest 4 deep; a config or a dataset row, a dozen
MAX_JSON_BYTES = 256 * 2**20
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def utf8(raw: bytes, source: Any, offset: int = 0) -> str:
    """`raw` as text; bytes that are not UTF-8 are named with their offset in the file
    (`raw` starts `offset` bytes into it)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte, at = raw[exc.start], offset + exc.start
        raise InterpError(
            f"{source} is not UTF-8 text (byte 0x{byte:02X} at byte offset {at})"
        ) from None


def json_text(text: str | bytes, source: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """One JSON document, its nesting checked before the (recursive) parser sees it."""
    if isinstance(text, bytes):
        text = utf8(text, source)
    # Brackets outside strings, as +1/-1 steps: the deepest point of the running sum.
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for ch in brackets:
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
        if deepest > max_depth:
            raise InterpError(f"{source} nests JSON more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers past 4,300 digits
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "too deep"
        raise InterpError(f"{source} is not valid JSON: {reason}") from None


def json_file(path: Path | str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON document in `path`: unreadable, too large, not UTF-8, too deep or malformed
    is one line naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise InterpError(f"{path} is {path.stat().st_size:,} bytes; at most {max_bytes:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise InterpError(f"cannot read {path}: {exc.strerror or exc}") from None
    return json_text(raw, path)


def _kind_name(kind) -> str:
    if isinstance(kind, list):
        return f"a list of {_kind_name(kind[0]).removeprefix('a ').removeprefix('an ')}s"
    if isinstance(kind, tuple):
        return " or ".join(_kind_name(k) for k in kind)
    name = {"str": "string", "int": "integer", "float": "number", "dict": "object",
            "NoneType": "null", "bool": "boolean"}.get(kind.__name__, kind.__name__)  # fmt: skip
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _value_name(value: Any) -> str:
    return (
        _kind_name(type(value))
        if not isinstance(value, list | dict)
        else _kind_name(list if isinstance(value, list) else dict)
    )


def is_kind(value: Any, kind) -> bool:
    """`kind`: a type (int excludes bool, float takes int), a tuple of kinds, or [kind] for a
    list of that kind."""
    if isinstance(kind, tuple):
        return any(is_kind(value, k) for k in kind)
    if isinstance(kind, list):
        return isinstance(value, list) and all(is_kind(v, kind[0]) for v in value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def fields(value: Any, source: Any, required: dict, optional: dict | None = None) -> dict:
    """A JSON object whose named fields have the kinds given (see `is_kind`)."""
    if not isinstance(value, dict):
        raise InterpError(f"{source} must be a JSON object, not {_value_name(value)}")
    for key, kind in {**required, **(optional or {})}.items():
        if key not in value:
            if key in required:
                raise InterpError(f"{source}: '{key}' is missing")
            continue
        if not is_kind(value[key], kind):
            raise InterpError(
                f"{source}: '{key}' must be {_kind_name(kind)}, not {_value_name(value[key])}"
            )
    return value


def table(frame, source: Any, columns: dict[str, str], below: dict | None = None, low: int = 0):
    """A frame read from a file: each named column present with its kind ("int", "float",
    "str", "bool"), integers within [low, below[column]) where a bound is given."""
    from pandas.api import types

    checks = {"int": types.is_integer_dtype, "float": types.is_numeric_dtype,
              "bool": types.is_bool_dtype,
              "str": lambda c: types.is_string_dtype(c) or types.is_object_dtype(c)}  # fmt: skip
    for column, kind in columns.items():
        if column not in frame.columns:
            raise InterpError(f"{source} has no '{column}' column")
        values = frame[column]
        if not checks[kind](values.dtype) or (kind != "str" and types.is_bool_dtype(values)
                                              and kind != "bool"):  # fmt: skip
            raise InterpError(f"{source}: column '{column}' must hold {kind}s, not {values.dtype}")
        if kind == "str" and not values.map(lambda v: isinstance(v, str)).all():
            raise InterpError(f"{source}: column '{column}' must hold strings")
    for column, bound in (below or {}).items():
        if column in frame.columns and len(frame):
            values = frame[column]
            if not types.is_integer_dtype(values.dtype) or types.is_bool_dtype(values.dtype):
                raise InterpError(f"{source}: column '{column}' must hold integers")
            least, most = int(values.min()), int(values.max())
            if least < low or most >= bound:
                raise InterpError(f"{source}: column '{column}' must lie in [{low}, {bound}), "
                                  f"holds {least}..{most}")  # fmt: skip
    return frame


def available_memory(device) -> int:
    """Bytes free for new tensors on `device` (a torch.device): CUDA's free memory, else the
    kernel's MemAvailable (what can be allocated without swapping)."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits_in_memory(needed: int, available: int, what: str, where: str) -> None:
    """Refuse, before allocating, what cannot fit: one line with both figures."""
    if needed > available:
        raise InterpError(f"{what} needs {needed / 2**30:,.1f} GiB; {where} has "
                          f"{available / 2**30:,.1f} GiB free")  # fmt: skip
