"""Cost of a full trace on smollm2-135m, side by side with the alternatives, in one process.

    .venv/bin/python benchmarks/capture.py [--quick] [--repeats 5] [--threads 1]

On the same 512-token input (median of `--repeats` runs, the methods interleaved so that load
from other processes hits them alike), time relative to transformers' plain forward of:
nnsight saving each layer's attention output, attention pattern, MLP output and residual
(4 x 30 tensors); interp's full trace; TransformerLens's run_with_cache (every hook). Then peak
memory of the trace vs run_with_cache, a 2048-token trace with streaming attention, and traced
generation vs transformers' generate (both with a KV cache). All models use eager attention,
the only kind that yields patterns.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

import interp
from interp.models import gguf_checkpoint
from interp.models.zoo import smollm2_gguf

torch.set_grad_enabled(False)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def medians(runs: dict, repeats: int) -> dict[str, float]:
    """Median seconds per run; each round runs every method once, in turn."""
    for fn in runs.values():
        fn()  # warm-up
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(seconds(fn))
    return {name: statistics.median(t) for name, t in times.items()}


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


def hf_model():
    """transformers' own model from the same checkpoint the trace runs, outside any bridge."""
    path = gguf_checkpoint(smollm2_gguf())
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


def twin(model):
    """A second module tree on the same weight tensors (nnsight wraps the modules it is given,
    so it gets its own; sharing the weights keeps this script's memory down)."""
    with torch.device("meta"):
        other = AutoModelForCausalLM.from_config(model.config, attn_implementation="eager")
    other.load_state_dict(model.state_dict(), assign=True)
    for name, buffer in model.named_buffers():  # non-persistent ones (rotary frequencies)
        owner, _, attr = name.rpartition(".")
        setattr(other.get_submodule(owner), attr, buffer)
    return other.eval()


def nnsight_run(wrapped):
    """nnsight saving, per layer, attention output and pattern, MLP output and residual."""

    def run(ids):
        saved = []  # outside the block: nnsight runs the block's body on its own
        with wrapped.trace(ids):
            for layer in wrapped.model.layers:
                attn_out, pattern = layer.self_attn.output[0], layer.self_attn.output[1]
                saved += [attn_out.save(), pattern.save(), layer.mlp.output.save()]
                saved.append(layer.output.save())
        assert len(saved) == 4 * len(wrapped.model.layers)
        return saved

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    from nnsight import NNsight

    model = interp.load()
    plain = hf_model()
    wrapped = NNsight(twin(plain))
    run_nnsight = nnsight_run(wrapped)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (1, 64 if args.quick else 512), generator=g)
    t = medians(
        {
            "transformers forward": lambda: plain(ids),
            "nnsight, 120 tensors": lambda: run_nnsight(ids),
            "interp trace": lambda: interp.trace(model, ids),
            "TL run_with_cache": lambda: model.run_with_cache(ids),
        },
        repeats,
    )
    base = t["transformers forward"]
    print(f"{ids.shape[1]} tokens, median of {repeats}, {args.threads} thread(s):")
    print("| run | seconds | vs transformers' plain forward |\n|---|---|---|")
    for name, s in t.items():
        print(f"| {name} | {s:.3f} | {s / base:.2f}x |")
    print(f"trace / run_with_cache: {t['interp trace'] / t['TL run_with_cache']:.2f}x")

    mem_trace = peak_rss_above(lambda: interp.trace(model, ids))
    mem_cache = peak_rss_above(lambda: model.run_with_cache(ids))
    print(f"peak memory above the model: trace {mem_trace:.2f} GB, run_with_cache "
          f"{mem_cache:.2f} GB ({mem_trace / mem_cache:.2f}x)")  # fmt: skip
    long = torch.randint(100, 40000, (1, 512 if args.quick else 2048), generator=g)
    mem = peak_rss_above(lambda: interp.trace(model, long, attention_budget_mb=64))
    print(f"{long.shape[1]} tokens, streaming attention: peak memory above the model {mem:.2f} GB")

    steps = 16 if args.quick else 64
    prompt = torch.randint(100, 40000, (1, 16), generator=g)
    hf_gen = seconds(
        lambda: plain.generate(prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    )
    traced_gen = seconds(lambda: interp.trace(model, prompt, max_new_tokens=steps))
    print(f"generate {steps} tokens: transformers {steps / hf_gen:.1f} tok/s | traced "
          f"{steps / traced_gen:.1f} tok/s ({hf_gen / traced_gen:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
