"""Reading a saved trace back (`Trace.load`): a damaged file is one `InterpError` line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from interp.errors import InterpError
from interp.trace.facts import ModelFacts

# What `trace()` writes into meta and what the frames and reports read back from it.
META_KEYS = {"model": str, "cfg": dict, "capture": list, "max_new_tokens": int, "sampling": dict}


def read_meta(directory: Path) -> dict:
    meta_file = Path(directory) / "meta.json"
    try:
        meta = json.loads(meta_file.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InterpError(f"{meta_file} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise InterpError(f"cannot read {meta_file}: {exc.strerror}") from None
    if not isinstance(meta, dict):
        raise InterpError(f"{meta_file} is not a JSON object")
    for key, kind in META_KEYS.items():
        if not isinstance(meta.get(key), kind):
            found = "missing" if key not in meta else f"a {type(meta[key]).__name__}"
            raise InterpError(f"{meta_file}: '{key}' must be a {kind.__name__}, is {found}")
    try:
        ModelFacts.from_dict(meta["cfg"])
    except TypeError as exc:  # a missing or unknown field
        raise InterpError(f"{meta_file}: 'cfg' does not describe a model ({exc})") from None
    return meta


def read_frames(directory: Path) -> dict[str, pd.DataFrame]:
    """Every `<frame>.parquet` in `directory`; a corrupt, truncated or empty file is named."""
    import pyarrow

    frames = {}
    for path in sorted(Path(directory).glob("*.parquet")):
        try:
            frames[path.stem] = pd.read_parquet(path)
        except (pyarrow.ArrowException, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InterpError(f"{path} is corrupt or truncated: {first[:200]}") from None
    return frames
