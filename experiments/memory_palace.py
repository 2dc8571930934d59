"""The memory palace: bytes of memory a model keeps per token of context, by layer kind.

The seed pictures the KV cache as a memory palace that grows by one room per token in every
layer. The newest architectures break that: a Mamba2 layer keeps a fixed state, a sliding
layer stops at its window, a compressed layer grows by one entry per `compress_rate` tokens.
For each zoo model (tiny-moe, tiny-deepseek, tiny-hybrid, tiny-deepseek-v4), and for full-size
configs built from transformers' config classes on the meta device (no weights, no hub), this
gives the memory after n tokens of one sequence, by layer kind, from the config alone
(`layer_bytes`, the formulas below, in the dtype transformers' cache keeps: bfloat16 for the
full-size models, the Mamba2 SSM state in `mamba_ssm_cache_dtype` float32). The formulas are
checked against the bytes of every tensor in the tiny models' real cache objects
(transformers' DynamicCache after a forward of n tokens), at several n. Held if they match
exactly at every n and layer. The formulas here are the experiment's own; interp's `memory`
frame (interp/trace/memory.py) keeps the same per kind for a traced generation.

Full-size sizes (published): SmolLM2-135M (30 layers, 3 KV heads of 64); DeepSeek-V3 (61
layers, MLA with 128 heads) and Kimi K2 (same, 64 heads): transformers caches MLA's latent
(kv_lora_rank + the rope key), not per-head K and V, so the heads do not count;
DeepSeek-V4 (DeepseekV4Config's defaults); Nemotron-H-8B-shaped (52 layers: 22 Mamba2 and
4 attention, each followed by an MLP layer, evenly spaced rather than the published pattern).

    python experiments/memory_palace.py [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    DeepseekV3Config,
    DeepseekV4Config,
    LlamaConfig,
    NemotronHConfig,
)

from interp.files import save_figure  # noqa: E402
from interp.models.zoo import ZOO  # noqa: E402
from interp.scripts import run_script  # noqa: E402

ZOO_MODELS = ["tiny-moe", "tiny-deepseek", "tiny-hybrid", "tiny-deepseek-v4"]
NEMOTRON = {"linear_attention": "mamba2", "full_attention": "attention"}  # moe / mlp keep none


def layer_kinds(c) -> list[str]:
    """The sequence mixer of each layer that keeps memory; None for those that keep none."""
    if c.model_type == "nemotron_h":
        return [NEMOTRON.get(k) for k in c.layers_block_type]
    if c.model_type == "deepseek_v4":
        return list(c.layer_types)
    return ["attention"] * c.num_hidden_layers


def layer_bytes(c, kind: str | None, n: int, b: int, ssm_b: int | None = None) -> int:
    """Bytes one layer of `kind` holds after n tokens of one sequence (b bytes per value)."""
    if kind is None:
        return 0
    if kind == "mamba2":  # conv window over x, B, C; the SSM state per head
        conv = c.mamba_num_heads * c.mamba_head_dim + 2 * c.n_groups * c.ssm_state_size
        ssm = c.mamba_num_heads * c.mamba_head_dim * c.ssm_state_size
        return conv * c.conv_kernel * b + ssm * (ssm_b or b)
    if c.model_type == "deepseek_v3":  # MLA: transformers keeps the latent and the rope key
        return n * (c.kv_lora_rank + c.qk_rope_head_dim) * b
    kv_heads = c.num_key_value_heads
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if c.model_type != "deepseek_v4":
        return 2 * n * kv_heads * head * b
    # Every V4 layer keeps a sliding window of the last sliding_window - 1 tokens (K and V).
    total = 2 * min(n, c.sliding_window - 1) * kv_heads * head
    if kind == "compressed_sparse_attention":
        r, width = c.compress_rates[kind], head + c.index_head_dim  # compressor + indexer
        # one entry per r tokens; the unfinished block's kv and gate, at twice the width
        # (overlapping windows); after the first block, the previous block kept for overlap
        total += (n // r) * width + 2 * (n % r) * 2 * width + (2 * r * width if n >= r else 0)
    elif kind == "heavily_compressed_attention":
        r = c.compress_rates[kind]
        total += (n // r) * head + 2 * (n % r) * head
    return total * b


def measured(model, n: int) -> list[int]:
    """Bytes of every tensor in each layer of the real cache after a forward of n tokens."""
    x = torch.randint(
        2, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n)
    )
    with torch.no_grad():
        cache = model(input_ids=x, use_cache=True).past_key_values

    def size(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size() if value.ndim else 0
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        return 0

    return [sum(size(v) for v in vars(layer).values()) for layer in cache.layers]


def full_size() -> dict:
    mla = dict(num_hidden_layers=61, hidden_size=7168, qk_nope_head_dim=128,
               qk_rope_head_dim=64, v_head_dim=128, kv_lora_rank=512)  # fmt: skip
    configs = {
        "SmolLM2-135M": LlamaConfig(
            hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3
        ),  # fmt: skip
        "DeepSeek-V3": DeepseekV3Config(num_attention_heads=128, **mla),
        "Kimi K2": DeepseekV3Config(num_attention_heads=64, **mla),
        "DeepSeek-V4": DeepseekV4Config(),
        "Nemotron-H-8B": NemotronHConfig(
            hidden_size=4096,
            mamba_num_heads=128,
            mamba_head_dim=64,
            ssm_state_size=128,
            n_groups=8,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            layers_block_type=[
                "mlp" if i % 2 else "full_attention" if i // 2 % 6 == 5 else "linear_attention"
                for i in range(52)
            ],
        ),  # fmt: skip
    }
    with torch.device("meta"):  # the configs only; building the models proves they are valid
        for c in configs.values():
            AutoModelForCausalLM.from_config(c)
    return configs


def per_kind(c, n: int, b: int, ssm_b: int | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind in layer_kinds(c):
        if kind is not None:
            out[kind] = out.get(kind, 0) + layer_bytes(c, kind, n, b, ssm_b)
    return out


def run(args: argparse.Namespace) -> None:
    steps = [1, 5, 16, 37] if args.quick else [1, 3, 4, 5, 15, 16, 17, 37, 64, 100]
    worst = 0
    print("formula against the real cache (bytes, one sequence, float32), every layer:")
    for name in (n for n in ZOO_MODELS if n in ZOO):
        model = AutoModelForCausalLM.from_pretrained(ZOO[name].path(), dtype=torch.float32)
        c = model.eval().config
        for n in steps:
            real = measured(model, n)
            formula = [layer_bytes(c, k, n, 4) for k in layer_kinds(c)]
            worst = max(worst, max(abs(a - f) for a, f in zip(real, formula, strict=True)))
        print(f"  {name:18s} n = {steps}: last n formula {sum(formula):>8d}, "
              f"measured {sum(real):>8d}")  # fmt: skip
    print(f"{'held' if worst == 0 else 'not held'}: largest |formula - measured| over every "
          f"layer and n: {worst} bytes")  # fmt: skip

    n_ctx = [2**k for k in range(0, 21, 2)]
    configs = full_size()
    print("\nbytes per token of context at 4096 / 1M tokens (bfloat16), by layer kind:")
    for name, c in configs.items():
        ssm_b = 4 if c.model_type == "nemotron_h" else None
        for n in (4096, 2**20):
            kinds = per_kind(c, n, 2, ssm_b)
            cells = ", ".join(f"{k} {v / n:,.0f}" for k, v in kinds.items())
            print(f"  {name:14s} n={n:>8d}: {sum(kinds.values()) / n:>10,.0f} B/token ({cells})")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, c in configs.items():
        ssm_b = 4 if c.model_type == "nemotron_h" else None
        ax.plot(n_ctx, [sum(per_kind(c, n, 2, ssm_b).values()) for n in n_ctx], marker=".",
                label=name)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="tokens of context",
           ylabel="memory held (bytes, one sequence)", title="Memory held by model")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    save_figure(fig, args.out, dpi=120)
    print(f"figure: {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="fewer context lengths checked")
    parser.add_argument("--out", type=Path, default=Path("reports/memory_palace.png"))
    run(parser.parse_args())


if __name__ == "__main__":
    run_script(main)
