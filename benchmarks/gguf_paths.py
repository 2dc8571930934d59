"""Converting a llama GGUF: interp's own reader vs transformers' GGUF support, side by side.

    .venv/bin/python benchmarks/gguf_paths.py [--gguf FILE] [--repeats 3]

Each repeat converts the file into a fresh cache with each reader (interleaved, so load from
other processes hits both alike) and prints the median seconds and their ratio; then checks
that both conversions give the same logits. Default file: the zoo's SmolLM2-135M GGUF.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import interp
from interp.models import gguf_checkpoint
from interp.models.zoo import smollm2_gguf

torch.set_grad_enabled(False)


def convert_seconds(path: Path, reader: str) -> float:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["INTERP_CACHE"] = cache
        start = time.perf_counter()
        gguf_checkpoint(path, reader=reader)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = args.gguf or smollm2_gguf()
    times = {"llama (interp)": [], "transformers": []}
    for _ in range(args.repeats):
        times["llama (interp)"].append(convert_seconds(path, "auto"))
        times["transformers"].append(convert_seconds(path, "transformers"))
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in median.items():
        print(f"{name:16s} {seconds:7.2f} s")
    print(f"transformers / interp: {median['transformers'] / median['llama (interp)']:.2f}x")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["INTERP_CACHE"] = cache
        ids = torch.arange(1, 33)
        logits = []
        for reader in ("auto", "transformers"):
            model = interp.load(str(gguf_checkpoint(path, reader=reader)))
            t = interp.trace(model, ids, capture=("residual",))
            logits.append(t.readout(t.tensor("resid")[-1]))
        print(f"max |logit difference|: {float((logits[0] - logits[1]).abs().max()):.2e}")


if __name__ == "__main__":
    main()
