"""The converted-weight cache serves only verified entries; temporaries never outlive a run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from interp import files
from interp.models import cache


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "model.src"
    source.write_bytes(os.urandom(3000))
    return tmp_path / "cache", source


def _build(payload: bytes):
    calls = []

    def build(out):
        calls.append(out)
        (out / "weights.bin").write_bytes(payload)
        (out / "config.json").write_text("{}")

    return build, calls


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_entry_records_its_checksums(root):
    _, source = root
    payload = os.urandom(1 << 20)
    build, calls = _build(payload)
    entry = cache.get_or_build(source, "gguf", build)
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    assert manifest["files"]["weights.bin"]["size"] == len(payload)
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    assert manifest["files"]["weights.bin"]["hash"] == digest
    assert cache.get_or_build(source, "gguf", build) == entry and len(calls) == 1


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(os.urandom(p.stat().st_size)), "does not match its checksum"),
        (lambda p: p.write_bytes(p.read_bytes()[:1000]), "has 1000 bytes, not 1048576"),
        (lambda p: p.unlink(), "cannot be read"),
        (lambda p: (p.parent / cache.MANIFEST).write_text("old/format/source/path"), "manifest"),
    ],
)
def test_damaged_entry_is_rebuilt_with_one_line(root, capsys, damage, reason):
    _, source = root
    payload = os.urandom(1 << 20)
    build, calls = _build(payload)
    entry = cache.get_or_build(source, "gguf", build)
    damage(entry / "weights.bin")
    assert cache.get_or_build(source, "gguf", build) == entry
    assert len(calls) == 2 and (entry / "weights.bin").read_bytes() == payload
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rebuilding the cached conversion of model.src" in err
    assert reason in err
    assert cache.damage(entry, full=True) is None


def test_full_check_finds_what_the_sampled_check_misses(root):
    _, source = root
    build, _ = _build(os.urandom(1 << 22))
    entry = cache.get_or_build(source, "gguf", build)
    weights = entry / "weights.bin"
    data = bytearray(weights.read_bytes())
    # 16 samples of 64 KiB cover 1 MiB of 4 MiB: a byte halfway between two samples is unread.
    middle = (len(data) - cache.SAMPLE_BYTES) * 1 // (cache.SAMPLES - 1) // 2 + cache.SAMPLE_BYTES
    data[middle] ^= 0xFF
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    assert "does not match its checksum" in cache.damage(entry)  # written since: rehashed
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # bit rot keeps the mtime
    assert cache.damage(entry) is None
    assert "does not match its checksum" in cache.damage(entry, full=True)


def test_a_touched_but_intact_entry_is_served(root):
    _, source = root
    build, calls = _build(os.urandom(1 << 20))
    entry = cache.get_or_build(source, "gguf", build)
    os.utime(entry / "weights.bin")
    assert cache.damage(entry) is None and cache.get_or_build(source, "gguf", build) == entry
    assert len(calls) == 1


def test_stale_temporaries_are_swept(root):
    cache_dir, source = root
    build, _ = _build(b"x")
    name = cache.entry_dir(source, "gguf").name
    cache_dir.mkdir(exist_ok=True)
    dead = cache_dir / f".{name}-{_dead_pid()}-abc"
    alive = cache_dir / f".{name}-1-abc"  # pid 1 runs as long as the machine does
    old_format = cache_dir / f".{name}-k2j3h4"
    for directory in (dead, alive, old_format):
        directory.mkdir()
        (directory / "model.safetensors").write_bytes(b"half")
    day_ago = os.stat(old_format).st_mtime - files.STALE_AFTER_S - 60
    os.utime(old_format, (day_ago, day_ago))
    cache.get_or_build(source, "gguf", build)
    assert not dead.exists() and not old_format.exists() and alive.exists()


def test_write_atomic_sweeps_dead_writers_temporaries(tmp_path):
    out = tmp_path / "out.html"
    dead = tmp_path / f".out.html.{_dead_pid()}.x1y2.tmp"
    alive = tmp_path / ".out.html.1.x1y2.tmp"
    unrelated = tmp_path / ".out.html.bak"
    for path in (dead, alive, unrelated):
        path.write_text("partial")
    files.write_atomic(out, "whole")
    assert out.read_text() == "whole"
    assert not dead.exists() and alive.exists() and unrelated.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([out.name, alive.name, unrelated.name])


def test_sigterm_while_writing_removes_the_temporary(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync_then_sigterm(fd):
        real_fsync(fd)
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # it exists now
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "fsync", fsync_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited, files.cleanup_on_sigterm():
        files.write_atomic(tmp_path / "out.html", "x" * 100_000)
    assert exited.value.code == 143
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_during_a_build_removes_the_half_built_entry(root):
    cache_dir, source = root

    def build(out):
        (out / "model.safetensors").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit), files.cleanup_on_sigterm():
        cache.get_or_build(source, "gguf", build)
    assert [p.name for p in cache_dir.iterdir()] == ["hash-index.json"]


def test_unwritable_cache_only_costs_a_rehash(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("INTERP_CACHE", str(blocker / "cache"))
    source = tmp_path / "src"
    source.write_bytes(b"abc")
    assert len(cache.file_hash(source)) == 32
    assert not cache.is_cached(source, "gguf")


def test_a_verified_entry_is_trusted_until_one_of_its_files_changes(root, monkeypatch):
    _, source = root
    build, calls = _build(os.urandom(1 << 20))
    entry = cache.get_or_build(source, "gguf", build)
    checks = []
    real = cache.damage
    monkeypatch.setattr(cache, "damage", lambda *a, **k: checks.append(a) or real(*a, **k))
    assert cache.get_or_build(source, "gguf", build) == entry and checks == []
    weights = entry / "weights.bin"
    stat = weights.stat()
    weights.write_bytes(os.urandom(1 << 20))  # same size, mtime set back: only ctime moves
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.get_or_build(source, "gguf", build) == entry
    assert len(checks) >= 1 and len(calls) == 2  # checked again, found damaged, rebuilt
