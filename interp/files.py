"""Output files written whole or not at all."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from interp.errors import InterpError


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: a reader
    never sees half a file, and a failed write leaves nothing behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InterpError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:  # interrupted too: never leave the temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InterpError(f"cannot write {path}: {exc.strerror}") from None
        raise


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """A matplotlib Figure as an image file (format from the suffix), written atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    write_atomic(Path(path), buffer.getvalue())
