"""Output files written whole or not at all, and no temporary left behind.

Every temporary is named `.<target>.<pid>.<random>.tmp` (a file) or `.<target>-<pid>-<random>`
(a directory) beside its target. The writer removes its own on failure, on Ctrl-C and (inside
`cleanup_on_sigterm`) on SIGTERM; a temporary whose process died (SIGKILL, power loss) is swept
by the next writer to the same directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from interp.errors import InterpError

# A temporary this old is stale even if its pid is alive again (pids are reused).
STALE_AFTER_S = 24 * 3600


class Terminated(BaseException):
    """SIGTERM, raised where the process stands so `finally` blocks remove temporaries."""


# Set by the SIGTERM handler. The exception it raises can be swallowed (raised inside a
# finaliser, or by a library that catches everything), so every commit of an output checks
# the flag too (`commit_allowed`), and the command still exits 143.
TERMINATED = threading.Event()


@contextlib.contextmanager
def cleanup_on_sigterm():
    """Within: SIGTERM unwinds the stack (each temporary's owner deletes it), then exits 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        TERMINATED.set()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Terminated:
        raise SystemExit(128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        terminated = TERMINATED.is_set()
        TERMINATED.clear()  # the flag means "this command was terminated", nothing after it
    if terminated:
        raise SystemExit(128 + signal.SIGTERM)


def commit_allowed() -> None:
    """Raise `Terminated` if SIGTERM came, even if its exception was lost: call it right
    before an output is renamed into place."""
    if TERMINATED.is_set():
        raise Terminated()


def temp_prefix(name: str, sep: str = ".") -> str:
    """The start of a temporary's name for target `name`: hidden, with this process's id."""
    return f".{name}{sep}{os.getpid()}{sep}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def sweep_stale(directory: Path, name: str, sep: str = ".", suffix: str = ".tmp") -> None:
    """Remove temporaries for target `name` in `directory` whose process is gone or that are
    older than STALE_AFTER_S; names without a pid (older versions) go by age alone."""
    head, tail = re.escape(f".{name}{sep}"), re.escape(suffix)
    pattern = re.compile(rf"{head}(?:(\d+){re.escape(sep)})?.+{tail}")
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match:
            continue
        with contextlib.suppress(OSError):
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            pid = int(match[1]) if match[1] else None
            if old or (pid is not None and pid != os.getpid() and not _alive(pid)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`: a reader
    never sees half a file, and a failed write leaves nothing behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    except OSError as exc:
        raise InterpError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are meant to be shared
        commit_allowed()
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
