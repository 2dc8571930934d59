"""Numbers and text for a page's <script type="application/json"> block.

Arrays travel gzip-compressed and base64-encoded, in little-endian typed-array order, and the
browser inflates them with its own DecompressionStream (no library). JSON is escaped so that no
token text can close the script element or open a comment: "<", ">", "&" and the two JavaScript
line separators become \\u escapes, which JSON.parse reads back as the same characters.
"""

from __future__ import annotations

import base64
import gzip
import json

import numpy as np

DTYPES = {"uint8": "<u1", "uint16": "<u2", "uint32": "<u4"}
LEVELS = 255  # attention weights, probabilities and router weights are shown as w = q / 255
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
            "\u2029": "\\u2029"}  # fmt: skip


def pack(values, dtype: str) -> dict:
    """A flat typed array: {"dtype", "n", "data": base64(gzip(bytes))}. mtime 0: the same
    numbers give the same page, byte for byte."""
    array = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=DTYPES[dtype])
    data = gzip.compress(array.tobytes(), compresslevel=6, mtime=0)
    return {"dtype": dtype, "n": int(array.size), "data": base64.b64encode(data).decode("ascii")}


def unpack(packed: dict) -> np.ndarray:
    """The inverse of `pack` (what the browser does), for tests and size checks."""
    raw = gzip.decompress(base64.b64decode(packed["data"]))
    return np.frombuffer(raw, dtype=DTYPES[packed["dtype"]])


def quantise(values) -> np.ndarray:
    """Values in [0, 1] as uint8 levels: the error is at most 1 / (2 * LEVELS)."""
    return np.rint(np.clip(np.asarray(values, dtype=np.float64), 0, 1) * LEVELS).astype(np.uint8)


def script_json(payload) -> str:
    """JSON that is inert inside <script type="application/json">...</script>."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in _ESCAPES.items():
        text = text.replace(char, escape)
    return text
