"""Cost of reading features during a trace on smollm2-135m, side by side in one process.

    .venv/bin/python benchmarks/features.py [--quick] [--repeats 5] [--width 8192]

On the same 256-token input (median of `--repeats` runs, the methods interleaved so that load
from other processes hits them alike), time relative to a trace capturing nothing: the trace
with a random TopK SAE (k=32, `--width` features) at layer 15's residual stream (its top-10
per token and reconstruction error kept), the same spliced in, and with ablation hooks for
one feature. A random dictionary costs what a trained one of its size costs: the encode is
the same matrix product.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import interp
from interp.runs.features import ablate_features

torch.set_grad_enabled(False)
HOOK = "blocks.15.hook_resid_post"


def random_sae(directory: Path, d_in: int, width: int) -> Path:
    g = torch.Generator().manual_seed(0)
    weights = {"W_enc": torch.randn(d_in, width, generator=g) / d_in**0.5,
               "b_enc": torch.zeros(width), "W_dec": torch.randn(width, d_in, generator=g) * 0.05,
               "b_dec": torch.zeros(d_in)}  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(directory / "sae_weights.safetensors"))
    cfg = {"architecture": "topk", "d_in": d_in, "d_sae": width, "k": 32,
           "metadata": {"hook_name": HOOK}}  # fmt: skip
    (directory / "cfg.json").write_text(json.dumps(cfg))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 tokens, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=8192)
    args = parser.parse_args()
    tokens, repeats = (64, 2) if args.quick else (256, args.repeats)
    model = interp.load("smollm2-135m")
    ids = torch.randint(
        100, model.cfg.d_vocab, (tokens,), generator=torch.Generator().manual_seed(1)
    )
    with tempfile.TemporaryDirectory() as tmp:
        sae = interp.features.load(random_sae(Path(tmp) / "sae", model.cfg.d_model, args.width))
    runs = {
        "trace (no capture)": lambda: interp.trace(model, ids, capture=[]),
        "+ features": lambda: interp.trace(model, ids, capture=[], features=[sae]),
        "+ features, spliced": lambda: interp.trace(model, ids, capture=[], features=[sae],
                                                   splice=True),
        "+ ablation hooks": lambda: interp.trace(model, ids, capture=[],
                                                fwd_hooks=ablate_features(sae, [0])),
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["trace (no capture)"])
    print(f"smollm2-135m, {tokens} tokens, SAE width {args.width} (k=32) at {HOOK}, "
          f"median of {repeats}")  # fmt: skip
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:24s} {median * 1e3:8.1f} ms  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
