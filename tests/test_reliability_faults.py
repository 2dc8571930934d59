"""Fault injection: a GGUF conversion and a report killed (SIGKILL, SIGTERM) at several points;
the next run leaves no litter and serves a verified cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import HANG_S

import interp
from interp.models import cache

# `interp` with each fsync slowed by 3 s: a written temporary file then stays in place long
# enough for the test to see it and kill the process at exactly that point.
SLOW_FSYNC = (
    "import os, sys, time\n"
    "fsync = os.fsync\n"
    "os.fsync = lambda fd: (time.sleep(3), fsync(fd))\n"
    "from interp.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _spawn(args: list[str], cache_dir: Path, cwd: Path, slow_fsync=False) -> subprocess.Popen:
    env = {**os.environ, "INTERP_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    program = ["-c", SLOW_FSYNC] if slow_fsync else ["-m", "interp.cli"]
    return subprocess.Popen([sys.executable, *program, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _kill_when(proc: subprocess.Popen, ready, sig: int) -> bool:
    """Send `sig` the moment `ready()` holds; False if the process ended first."""
    deadline = time.monotonic() + HANG_S
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(sig)
            proc.wait(timeout=HANG_S)
            return True
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    return False


def _litter(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*") if p.name != ".lock")


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory) -> Path:
    from tiny_gguf import write_tiny_gguf

    # 8 layers of width 256 (~25 MB of float32): a conversion that lasts long enough to kill.
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", d_model=256, layers=8)


KILL_POINTS = {
    "temporary created": lambda c: any(c.glob(".gguf-*")),
    "weights being written": lambda c: any(c.glob(".gguf-*/model.safetensors")),
}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_conversion_leaves_nothing_the_next_run_keeps(
    gguf_file, tmp_path, monkeypatch, sig, point
):
    cache_dir = tmp_path / "cache"
    proc = _spawn(["generate", "hi", "--model", str(gguf_file), "-n", "2"], cache_dir, tmp_path)
    assert _kill_when(proc, lambda: KILL_POINTS[point](cache_dir), sig), "finished before the kill"
    if sig == signal.SIGTERM:  # the process removed its own temporary, and said nothing else
        assert proc.returncode == 143 and _litter(cache_dir) == []
        assert b"Traceback" not in proc.stderr.read()
    else:
        assert proc.returncode == -signal.SIGKILL
    monkeypatch.setenv("INTERP_CACHE", str(cache_dir))
    model = interp.load(str(gguf_file))
    assert _litter(cache_dir) == []  # a dead process's temporary is swept
    entries = [p for p in cache_dir.iterdir() if p.is_dir()]
    assert len(entries) == 1 and cache.damage(entries[0], full=True) is None
    assert interp.trace(model, "hi", max_new_tokens=2, capture=()).records[0].ids.shape == (4,)


def test_entry_damaged_in_place_is_rebuilt_and_serves_the_same_model(
    gguf_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    model = interp.load(str(gguf_file))
    ids = torch.tensor([104, 105, 32, 116])
    want = interp.trace(model, ids, max_new_tokens=4, capture=()).records[0].ids
    weights = cache.entry_dir(gguf_file, "gguf") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)  # same size, weights zeroed
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    again = interp.load(str(gguf_file))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rebuilding the cached conversion of tiny.gguf" in err
    got = interp.trace(again, ids, max_new_tokens=4, capture=()).records[0].ids
    assert torch.equal(got, want)


@pytest.mark.slow  # two whole `interp report` subprocesses per case
@pytest.mark.parametrize(
    ("sig", "point"),
    [(signal.SIGKILL, "temporary written"), (signal.SIGTERM, "temporary written"),
     (signal.SIGTERM, "model loading")],
    ids=["SIGKILL-writing", "SIGTERM-writing", "SIGTERM-loading"],
)  # fmt: skip
def test_killed_report_leaves_no_litter(tmp_path, sig, point):
    args = ["report", "The cat sat on the mat", "--model", "tiny-moe", "--generate", "2",
            "-o", "out.html", "--no-progress"]  # fmt: skip
    temporaries = lambda: list(tmp_path.glob(".out.html.*.tmp"))  # noqa: E731
    ready = {
        "temporary written": temporaries,
        "model loading": lambda: time.monotonic() > start + 2,
    }
    start = time.monotonic()
    proc = _spawn(args, tmp_path / "cache", tmp_path, slow_fsync=point == "temporary written")
    assert _kill_when(proc, ready[point], sig), "the report finished before the kill"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and len(temporaries()) == 1  # litter, for now
    else:  # the process removed its own temporary
        assert proc.returncode in (143, -signal.SIGTERM)  # -15: before the handler was set
        assert _litter(tmp_path) == []
    assert not (tmp_path / "out.html").exists()
    rerun = _spawn(args, tmp_path / "cache", tmp_path)
    assert rerun.wait(timeout=HANG_S) == 0, rerun.stderr.read()
    assert _litter(tmp_path) == []  # a dead writer's temporary is swept
    assert (tmp_path / "out.html").read_text().rstrip().endswith("</html>")


def test_sigterm_whose_exception_is_swallowed_still_commits_nothing(tmp_path):
    """SIGTERM's exception can be lost (raised inside a finaliser, or caught by a library):
    the command still writes no output and exits 143."""
    from interp.files import cleanup_on_sigterm, write_atomic

    out = tmp_path / "out.html"
    with pytest.raises(SystemExit) as exit_info, cleanup_on_sigterm():
        try:  # a library that catches everything
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except BaseException:
            pass
        write_atomic(out, "<html>")
    assert exit_info.value.code == 143
    assert list(tmp_path.iterdir()) == []
    write_atomic(out, "<html>")  # what runs next in the same process is not affected
    assert out.read_text() == "<html>"
