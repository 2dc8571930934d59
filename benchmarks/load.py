"""Load times of smollm2-135m: cold (GGUF -> cache), warm (cache hit), and TL's native bridge
built straight from the GGUF, measured side by side in one run, each in a fresh process.

    .venv/bin/python benchmarks/load.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

# Imports (transformers + TransformerLens, ~3-6 s here) are paid by every approach alike; they
# are timed separately so the load itself is what is compared.
IMPORTS = "import interp, transformers, transformer_lens.model_bridge"
CLOCK = "t = time.perf_counter()"
LOAD = f"import time; {IMPORTS}; {CLOCK}; interp.load(); print(time.perf_counter() - t)"
IMPORT_ONLY = f"import time; {CLOCK}; {IMPORTS}; print(time.perf_counter() - t)"

NATIVE = """
import time
import torch
import transformers
t = time.perf_counter()
from gguf import GGUFReader
from gguf.quants import dequantize
from transformer_lens.model_bridge import TransformerBridge
from interp.models.zoo import smollm2_gguf
reader = GGUFReader(str(smollm2_gguf()))
cfg = dict(d_model=576, d_head=64, n_heads=9, n_key_value_heads=3, n_layers=30, n_ctx=2048,
           d_mlp=1536, d_vocab=49152, act_fn="silu", normalization_type="RMS", eps=1e-5,
           positional_embedding_type="rotary", rotary_base=100000, gated_mlp=True,
           final_rms=True, init_weights=False)
bridge = TransformerBridge.boot_native(cfg)
# llama.cpp's adjacent-pair rotary layout is the native model's own: no un-permute needed.
names = {"attn_norm": "ln1.weight", "attn_q": "attn.q.weight", "attn_k": "attn.k.weight",
         "attn_v": "attn.v.weight", "attn_output": "attn.o.weight", "ffn_norm": "ln2.weight",
         "ffn_gate": "mlp.gate.weight", "ffn_up": "mlp.in.weight", "ffn_down": "mlp.out.weight"}
state = {}
for tensor in reader.tensors:
    w = torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).copy())
    if tensor.name == "token_embd.weight":
        state["tok_embed.weight"] = w
        state["head.weight"] = w
    elif tensor.name == "output_norm.weight":
        state["ln_out.weight"] = w
    else:
        _, layer, kind, _ = tensor.name.split(".")
        state[f"layers.{layer}.{names[kind]}"] = w
module = bridge.original_model
module.load_state_dict(state, strict=False)
for block in module.layers:  # the native attention has biases; llama has none
    for lin in (block.attn.q, block.attn.k, block.attn.v, block.attn.o):
        torch.nn.init.zeros_(lin.bias)
print(time.perf_counter() - t)
"""


def timed(code: str, env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "INTERP_CACHE": cache}
        cold = timed(LOAD, env)
        warm = min(timed(LOAD, env) for _ in range(3))
    native = timed(NATIVE, dict(os.environ))
    imports = min(timed(IMPORT_ONLY, dict(os.environ)) for _ in range(2))
    print(f"cold load (GGUF dequantise + cache write + build): {cold:6.2f} s")
    print(f"warm load (cached safetensors + build, best of 3): {warm:6.2f} s")
    print(f"TL native bridge from the GGUF (no cache):          {native:6.2f} s")
    print(f"imports (transformers + TransformerLens), paid by all: {imports:6.2f} s")
    print(f"ratios: cold/warm = {cold / warm:.1f}x, native/warm = {native / warm:.1f}x")


if __name__ == "__main__":
    main()
