"""Cost of the patching grids, side by side in one run, on smollm2-135m (tiny-moe with --quick).

    .venv/bin/python benchmarks/patching.py [--quick]

Prints, for the Eiffel / Colosseum pair: each exact grid batched (32 patched copies per forward)
against the same grid one patched run at a time, and attribution patching (every grid from one
forward and one backward) against the exact grids it estimates.
"""

from __future__ import annotations

import argparse
import time

import interp
from interp.runs.patching import patching

PAIRS = {
    "smollm2-135m": ("The Eiffel Tower is in the city of", "The Colosseum is in the city of",
                     " Paris", " Rome"),
    "tiny-moe": ("def foo(a, b):\n    return a +", "def foo(x, y):\n    return x +", " ", "'"),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny-moe instead of smollm2-135m")
    name = "tiny-moe" if parser.parse_args().quick else "smollm2-135m"
    model = interp.load(name)
    clean, corrupt, answer, wrong = PAIRS[name]
    patching(model, clean, corrupt, answer, wrong, grids=["mlp"])  # warm-up
    start = time.perf_counter()
    batched = patching(model, clean, corrupt, answer, wrong)
    total = time.perf_counter() - start
    single = patching(model, clean, corrupt, answer, wrong, batch_size=1)
    print(f"{name}: {len(batched.tokens)} tokens, all grids {total:.2f} s")
    for grid, frame in batched.frames.items():
        cells = len(frame) // 2
        fast, slow = batched.seconds[grid], single.seconds[grid]
        print(f"  {grid:>5}: {cells:4d} cells, batched {fast:6.2f} s, one at a time "
              f"{slow:6.2f} s: {slow / fast:5.1f}x")  # fmt: skip
    exact = sum(batched.seconds[grid] for grid in batched.frames)
    grad = batched.seconds["attribution"]
    print(f"  attribution patching, every grid: {grad:.2f} s; the exact grids (batched) "
          f"{exact:.2f} s: {exact / grad:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
