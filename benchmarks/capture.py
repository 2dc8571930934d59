"""Cost of a full trace on smollm2-135m, side by side with the plain alternatives, in one run.

    .venv/bin/python benchmarks/capture.py [--quick]

Prints ratios: full capture vs transformers' plain forward (64 and 512 tokens) and vs TL's
run_with_cache (time and peak memory); peak memory of a 2048-token trace with streaming
attention reductions; traced generation vs transformers' generate (both with a KV cache).
"""

from __future__ import annotations

import argparse
import ctypes
import time

import torch

import interp

torch.set_grad_enabled(False)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_above(fn) -> float:
    """Peak resident memory (GB) that `fn` adds above what the process held before it."""
    # glibc keeps freed blocks mapped, so a later run would reuse them unseen: hand them back.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    fn()
    return (_status("VmHWM") - before) / 2**20


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])  # kB
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    model = interp.load()
    hf = model.original_model
    g = torch.Generator().manual_seed(0)
    for n in (64, 512):
        ids = torch.randint(100, 40000, (1, n), generator=g)
        plain = best_time(lambda ids=ids: hf(ids), repeats)
        traced = best_time(lambda ids=ids: interp.trace(model, ids), repeats)
        cached = best_time(lambda ids=ids: model.run_with_cache(ids), repeats)
        mem_trace = peak_rss_above(lambda ids=ids: interp.trace(model, ids))
        mem_cache = peak_rss_above(lambda ids=ids: model.run_with_cache(ids))
        print(f"{n:4d} tokens: HF forward {plain:.3f} s | trace {traced:.3f} s "
              f"({traced / plain:.2f}x) | TL run_with_cache {cached:.3f} s "
              f"({traced / cached:.2f}x of it) | peak memory trace {mem_trace:.2f} GB vs "
              f"run_with_cache {mem_cache:.2f} GB")  # fmt: skip
    long = torch.randint(100, 40000, (1, 512 if args.quick else 2048), generator=g)
    mem = peak_rss_above(lambda: interp.trace(model, long, attention_budget_mb=64))
    print(f"{long.shape[1]} tokens, streaming attention: peak memory above the model {mem:.2f} GB")
    steps = 16 if args.quick else 64
    prompt = torch.randint(100, 40000, (1, 16), generator=g)
    hf_gen = best_time(
        lambda: hf.generate(prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False),
        1,
    )
    traced_gen = best_time(lambda: interp.trace(model, prompt, max_new_tokens=steps), 1)
    print(f"generate {steps} tokens: HF {steps / hf_gen:.1f} tok/s | traced "
          f"{steps / traced_gen:.1f} tok/s ({hf_gen / traced_gen:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
