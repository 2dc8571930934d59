"""The memory palace: bytes of memory a model keeps per token of context, by layer kind.

The seed pictures the KV cache as a memory palace that grows by one room per token in every
layer. The newest architectures break that: a Mamba2 layer keeps a fixed state, a sliding
layer stops at its window, a compressed layer grows by one entry per `compress_rate` tokens.
For each zoo model (tiny-moe, tiny-deepseek, tiny-hybrid, tiny-deepseek-v4), and for full-size
configs built from transformers' config classes on the meta device (no weights, no hub), this
gives the memory after n tokens of one sequence, by layer kind, from the config alone:
interp's per-layer memory formulas (interp/trace/memory.py, DeepSeek-V4's in v4_memory.py) on
`ModelFacts.of_config`, as transformers' own cache keeps it (`own_cache`: MLA's latent), in
bfloat16 for the full-size models (the Mamba2 SSM state in float32, as transformers' scan
keeps it). The formulas are checked against the bytes of every tensor in the tiny models' real
cache objects (transformers' DynamicCache after a forward of n tokens), at several n. Held if
they match exactly at every n and layer.

Full-size sizes (published): SmolLM2-135M (30 layers, 3 KV heads of 64); DeepSeek-V3 (61
layers, MLA with 128 heads) and Kimi K2 (same, 64 heads): transformers caches MLA's latent
(kv_lora_rank + the rope key), not per-head K and V, so the heads do not count;
DeepSeek-V4 (DeepseekV4Config's defaults); Nemotron-H-8B (nvidia/Nemotron-H-8B-Base-8K: 52
layers by its hybrid_override_pattern, 24 Mamba2 (M), 4 attention (*), 24 MLP (-); 128 Mamba
heads of 64, state 128, 8 groups; 32 query heads, 8 KV heads of 128; as NVIDIA's Megatron-Bridge
model page and vLLM's NemotronHConfig default give them).

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
from interp.trace.facts import ModelFacts  # noqa: E402
from interp.trace.memory import formula, layer_memory  # noqa: E402

ZOO_MODELS = ["tiny-moe", "tiny-deepseek", "tiny-hybrid", "tiny-deepseek-v4"]
# nvidia/Nemotron-H-8B-Base-8K: M Mamba2, * attention, - MLP (52 layers).
NEMOTRON_H_8B = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"


def per_layer(facts: ModelFacts, n: int) -> list[int]:
    """Bytes each layer holds after n tokens of one sequence, by interp's formulas."""
    out = [0] * facts.n_layers
    for layer, kind, sub in layer_memory(facts, own_cache=True):
        out[layer] += formula(facts, kind, n, sub)["bytes"]
    return out


def per_kind(facts: ModelFacts, n: int) -> dict[str, int]:
    """Bytes after n tokens, summed by the layer kind (sequence mixer) that holds them."""
    out: dict[str, int] = {}
    for _, kind, sub in layer_memory(facts, own_cache=True):
        out[sub] = out.get(sub, 0) + formula(facts, kind, n, sub)["bytes"]
    return out


def measured(model, n: int) -> list[int]:
    """Bytes of every tensor in each layer of the real cache after a forward of n tokens."""
    x = torch.randint(
        2, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n)
    )
    with torch.no_grad():
        cache = model(input_ids=x, use_cache=True).past_key_values

    def size(value, seen: set) -> int:
        if isinstance(value, torch.Tensor):
            # One tensor held under two names (V4's compressed layers: K = V) is held once.
            if not value.ndim or id(value) in seen:
                return 0
            seen.add(id(value))
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(size(v, seen) for v in value.values())
        return 0

    return [size(dict(vars(layer)), set()) for layer in cache.layers]


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
            vocab_size=131072,
            hidden_size=4096,
            intermediate_size=21504,
            mamba_num_heads=128,
            mamba_head_dim=64,
            ssm_state_size=128,
            n_groups=8,
            conv_kernel=4,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            hybrid_override_pattern=NEMOTRON_H_8B,
        ),  # fmt: skip
    }
    with torch.device("meta"):  # the configs only; building the models proves they are valid
        for c in configs.values():
            AutoModelForCausalLM.from_config(c)
    return configs


def run(args: argparse.Namespace) -> None:
    steps = [1, 5, 16, 37] if args.quick else [1, 3, 4, 5, 15, 16, 17, 37, 64, 100]
    worst = 0
    print("formula against the real cache (bytes, one sequence, float32), every layer:")
    for name in (n for n in ZOO_MODELS if n in ZOO):
        model = AutoModelForCausalLM.from_pretrained(ZOO[name].path(), dtype=torch.float32)
        facts = ModelFacts.of_config(model.eval().config, "float32")
        for n in steps:
            real, mine = measured(model, n), per_layer(facts, n)
            worst = max(worst, max(abs(a - f) for a, f in zip(real, mine, strict=True)))
        print(f"  {name:18s} n = {steps}: last n formula {sum(mine):>8d}, "
              f"measured {sum(real):>8d}")  # fmt: skip
    print(f"{'held' if worst == 0 else 'not held'}: largest |formula - measured| over every "
          f"layer and n: {worst} bytes")  # fmt: skip

    n_ctx = [2**k for k in range(0, 21, 2)]
    configs = {name: ModelFacts.of_config(c, "bfloat16") for name, c in full_size().items()}
    nemotron = configs["Nemotron-H-8B"]
    layers = ", ".join(f"{k} {len(nemotron.layers_of(k))}" for k in ("mamba2", "attention", "mlp"))
    print(f"\nNemotron-H-8B layers (its pattern): {layers}")
    print("bytes per token of context at 4096 / 1M tokens (bfloat16), by layer kind:")
    for name, facts in configs.items():
        for n in (4096, 2**20):
            kinds = per_kind(facts, n)
            cells = ", ".join(f"{k} {v / n:,.0f}" for k, v in kinds.items())
            print(f"  {name:14s} n={n:>8d}: {sum(kinds.values()) / n:>10,.0f} B/token ({cells})")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, facts in configs.items():
        ax.plot(n_ctx, [sum(per_kind(facts, n).values()) for n in n_ctx], marker=".",
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
