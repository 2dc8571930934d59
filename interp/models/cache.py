"""Converted-weight cache: a GGUF is dequantised once, then loaded as a plain HF checkpoint.

Entries are keyed by the source file's content hash, so replacing the file invalidates them.
Hashing 100 MB costs a fraction of a second; a small index keyed by (path, size, mtime) skips
even that on a warm load.

Each entry's `complete` file is a manifest written at build time: every file's size, full hash
and sampled hash. A load checks sizes and sampled hashes (a few MB read, whatever the size);
`verify(..., full=True)` (`interp models --verify`) rehashes everything. A damaged entry is
rebuilt, with one line on stderr saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from interp.errors import InterpError
from interp.files import sweep_stale, temp_prefix, write_atomic

MANIFEST = "complete"
SAMPLES, SAMPLE_BYTES = 16, 1 << 16  # the cheap check reads 16 x 64 KiB per file


def cache_root() -> Path:
    """`$INTERP_CACHE`, else `$XDG_CACHE_HOME/interp`, else `~/.cache/interp`."""
    if os.environ.get("INTERP_CACHE"):
        return Path(os.environ["INTERP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "interp"


def _full_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sampled_hash(path: Path) -> str:
    """Hash of SAMPLES evenly spaced slices (the first and last included)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as f:
        for i in range(SAMPLES):
            f.seek(max(0, size - SAMPLE_BYTES) * i // (SAMPLES - 1))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


# In-process memos: a source's hash by its stamp, and each entry found whole by the stat of
# every file in it (ctime too, which no utime can set back); a load trusts them until a stat moves.
_HASHES: dict[str, str] = {}
_VERIFIED: dict[Path, tuple] = {}


def file_hash(path: Path) -> str:
    stat = path.stat()
    stamp = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if stamp in _HASHES:
        return _HASHES[stamp]
    _HASHES[stamp] = _file_hash(path, stamp)
    return _HASHES[stamp]


def _file_hash(path: Path, stamp: str) -> str:
    index_file = cache_root() / "hash-index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):
        index = {}
    if isinstance(index.get(stamp), str):
        return index[stamp]
    index[stamp] = _full_hash(path)
    try:
        write_atomic(index_file, json.dumps(index))
    except InterpError:
        pass  # an unwritable cache only costs a re-hash next time
    return index[stamp]


def entry_dir(source: Path, kind: str) -> Path:
    return cache_root() / f"{kind}-{file_hash(source)}"


def is_cached(source: Path, kind: str) -> bool:
    return (entry_dir(source, kind) / MANIFEST).exists()


def _manifest(directory: Path, source: Path) -> dict:
    files = {
        p.name: {
            "size": p.stat().st_size,
            "mtime_ns": p.stat().st_mtime_ns,
            "hash": _full_hash(p),
            "sampled": _sampled_hash(p),
        }  # fmt: skip
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    return {"source": str(source), "files": files}


def damage(entry: Path, full: bool = False) -> str | None:
    """None if `entry` matches its manifest, else what is wrong (one phrase).

    Cheap unless `full`: sizes and sampled hashes; a file written since the build (its mtime
    moved, as any in-place write moves it) is rehashed in full."""
    try:
        files = json.loads((entry / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        files = None
    if not isinstance(files, dict) or not files:
        return "it has no readable checksum manifest"
    for name, want in files.items():
        path = entry / name
        try:
            stat = path.stat()
            if stat.st_size != want["size"]:
                return f"{name} has {stat.st_size} bytes, not {want['size']}"
            rehash = full or stat.st_mtime_ns != want.get("mtime_ns")
            if _sampled_hash(path) != want["sampled"] or (
                rehash and _full_hash(path) != want["hash"]
            ):
                return f"{name} does not match its checksum"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror})"
        except (KeyError, TypeError):
            return "its checksum manifest is malformed"
    return None


def _stats(entry: Path) -> tuple:
    return tuple(
        (p.name, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino)
        for p in sorted(entry.iterdir())
        for s in [p.stat()]
    )


_NO_ENTRY = "no entry"


def _problem(target: Path) -> str | None:
    """None if the entry at `target` is whole: found whole earlier in this process with no
    file in it changed since, or matching its manifest now; else what is wrong with it
    (`_NO_ENTRY` where there is none)."""
    try:
        stats = _stats(target)
    except OSError:
        return _NO_ENTRY
    if _VERIFIED.get(target) == stats:
        return None
    if not (target / MANIFEST).exists():
        return _NO_ENTRY
    problem = damage(target)
    if problem is None:
        _VERIFIED[target] = stats
    return problem


def verified(source: Path, kind: str) -> Path | None:
    """`source`'s cache entry of `kind` if it is there and matches its manifest, else None
    (a damaged entry is left for `get_or_build` to rebuild). Checked once per process while
    no file in it changes."""
    target = entry_dir(source, kind)
    return target if _problem(target) is None else None


def get_or_build(source: Path, kind: str, build: Callable[[Path], None]) -> Path:
    """The verified cache directory for `source`; `build(tmpdir)` fills it on a miss.

    Built in a temporary sibling (named with this process's id) and renamed into place, so an
    interrupted build never leaves a half-written entry, and a killed one is swept next time.
    """
    target = entry_dir(source, kind)
    problem = _problem(target)  # checked once: a damaged entry's hashes are not read twice
    if problem is None:
        return target
    if problem is not _NO_ENTRY:
        print(f"interp: rebuilding the cached conversion of {source.name}: {problem}",
              file=sys.stderr)  # fmt: skip
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(target.parent, target.name, sep="-", suffix="")
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name, "-"), dir=target.parent))
    except OSError as exc:
        raise InterpError(
            f"cannot write the model cache at {target.parent}: {exc.strerror} "
            "(set INTERP_CACHE to a writable directory)"
        ) from None
    try:
        build(tmp)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp, source), indent=1))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        _VERIFIED[target] = _stats(target)  # just written and hashed
    except OSError as exc:
        if (target / MANIFEST).exists() and damage(target) is None:
            return target  # another process finished the same entry first
        raise InterpError(f"cannot write the model cache at {target.parent}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
