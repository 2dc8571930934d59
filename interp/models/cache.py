"""Converted-weight cache: a GGUF is dequantised once, then loaded as a plain HF checkpoint.

Entries are keyed by the source file's content hash, so replacing the file invalidates them.
Hashing 100 MB costs a fraction of a second; a small index keyed by (path, size, mtime) skips
even that on a warm load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from interp.errors import InterpError
from interp.files import write_atomic


def cache_root() -> Path:
    """`$INTERP_CACHE`, else `$XDG_CACHE_HOME/interp`, else `~/.cache/interp`."""
    if os.environ.get("INTERP_CACHE"):
        return Path(os.environ["INTERP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "interp"


def file_hash(path: Path) -> str:
    stat = path.stat()
    stamp = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index_file = cache_root() / "hash-index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if stamp in index:
        return index[stamp]
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    index[stamp] = digest.hexdigest()
    try:
        write_atomic(index_file, json.dumps(index))
    except OSError:
        pass  # an unwritable cache only costs a re-hash next time
    return index[stamp]


def entry_dir(source: Path, kind: str) -> Path:
    return cache_root() / f"{kind}-{file_hash(source)}"


def is_cached(source: Path, kind: str) -> bool:
    return (entry_dir(source, kind) / "complete").exists()


def get_or_build(source: Path, kind: str, build: Callable[[Path], None]) -> Path:
    """The cache directory for `source`; `build(tmpdir)` fills it on a miss.

    Built in a temporary sibling and renamed into place, so an interrupted build never
    leaves a half-written entry.
    """
    target = entry_dir(source, kind)
    if (target / "complete").exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise InterpError(
            f"cannot write the model cache at {target.parent}: {exc.strerror}"
        ) from None
    try:
        build(tmp)
        (tmp / "complete").write_text(str(source))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
