"""Cost of tracing on a GPU, in bf16, side by side with the plain model, in one run.

    .venv/bin/python benchmarks/gpu.py                      # on a CUDA machine (H100/H200 class)
    .venv/bin/python benchmarks/gpu.py --device cpu --quick # seconds-long smoke run, no GPU

Two models in bfloat16: smollm2-135m (embedded), and a model of OLMoE-1B-7B's shape (numbers
below, from allenai/OLMoE-1B-7B-0924's config.json) built from its config with random weights,
directly on the device (no download; the trace's cost does not depend on the weights' values).
Prints one table: trace (default capture: residual, attention, routing, shapes) against the
plain Hugging Face forward at 512 and 2048 tokens, as a time ratio and peak CUDA memory above
the weights; then traced generation against Hugging Face's generate, in tokens/s.
`--quick` runs 32 and 64 tokens, 2 generated tokens, and OLMoE's shape with 2 layers of width
256 (64 experts, top-8 kept) so that it fits a CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

import interp

torch.set_grad_enabled(False)

# allenai/OLMoE-1B-7B-0924: 6.9B parameters, 1.3B active per token.
OLMOE_1B_7B = dict(
    num_hidden_layers=16, hidden_size=2048, intermediate_size=1024, num_attention_heads=16,
    num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, vocab_size=50304,
    max_position_embeddings=4096, rms_norm_eps=1e-5, norm_topk_prob=False, clip_qkv=None,
    tie_word_embeddings=False, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
)  # fmt: skip
QUICK_SHAPE = dict(num_hidden_layers=2, hidden_size=256, intermediate_size=128,
                   num_attention_heads=4, num_key_value_heads=4)  # fmt: skip


def olmoe_shaped(device: torch.device, quick: bool):
    """A bridge around a randomly initialised OLMoE-1B-7B-shaped model, built on `device`."""
    from transformers import AutoModelForCausalLM, OlmoeConfig

    from interp.models.hf import bridge_hf_model

    config = OlmoeConfig(**{**OLMOE_1B_7B, **(QUICK_SHAPE if quick else {})})
    config.architectures = ["OlmoeForCausalLM"]
    torch.manual_seed(0)
    with device:  # weights are created where they will run: no CPU copy of 14 GB
        model = AutoModelForCausalLM.from_config(
            config, dtype=torch.bfloat16, attn_implementation="eager"
        )
    return bridge_hf_model(model, "olmoe-1b-7b-shaped")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, repeats: int) -> tuple[float, float | None]:
    """(best time in s, peak CUDA memory above what was allocated before, in GB)."""
    fn()  # warm-up: kernels, allocator
    sync(device)
    best, peak = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    return best, peak


def gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def bench(name: str, model, device: torch.device, lengths, steps: int, repeats: int) -> None:
    hf = model.original_model
    g = torch.Generator().manual_seed(0)
    vocab = model.cfg.d_vocab
    for n in lengths:
        ids = torch.randint(100, vocab, (1, n), generator=g)
        on_device = ids.to(device)
        plain, plain_mem = measure(lambda x=on_device: hf(x), device, repeats)
        traced, trace_mem = measure(lambda x=ids: interp.trace(model, x), device, repeats)
        print(f"{name:20s} {n:6d} {plain:9.3f} {traced:9.3f} {traced / plain:7.2f}x "
              f"{gb(plain_mem):>9s} {gb(trace_mem):>9s}")  # fmt: skip
    prompt = torch.randint(100, vocab, (1, 16), generator=g)
    hf_gen, _ = measure(
        lambda: hf.generate(prompt.to(device), max_new_tokens=steps, min_new_tokens=steps,
                            do_sample=False, pad_token_id=0),
        device, 1,
    )  # fmt: skip
    traced_gen, _ = measure(lambda: interp.trace(model, prompt, max_new_tokens=steps), device, 1)
    print(f"{name:20s} generate {steps} tokens: HF {steps / hf_gen:.1f} tok/s | traced "
          f"{steps / traced_gen:.1f} tok/s ({hf_gen / traced_gen:.2f}x of HF's rate)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--quick", action="store_true", help="short smoke run (see above)")
    args = parser.parse_args()
    from interp.models.devices import parse_device

    device = parse_device(args.device)
    lengths, steps, repeats = ((32, 64), 2, 1) if args.quick else ((512, 2048), 64, 3)
    print(f"device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", bfloat16, best of {repeats}; memory: peak CUDA GB above the weights")  # fmt: skip
    print(f"{'model':20s} {'tokens':>6s} {'forward s':>9s} {'trace s':>9s} {'ratio':>8s} "
          f"{'fwd GB':>9s} {'trace GB':>9s}")  # fmt: skip
    smollm = interp.load("smollm2-135m", device=device, dtype="bfloat16")
    bench("smollm2-135m", smollm, device, lengths, steps, repeats)
    del smollm
    olmoe = olmoe_shaped(device, args.quick)
    params = sum(p.numel() for p in olmoe.original_model.parameters()) / 1e9
    bench(f"olmoe-shaped {params:.2f}B", olmoe, device, lengths, steps, repeats)


if __name__ == "__main__":
    from interp.scripts import run_script

    run_script(main)
