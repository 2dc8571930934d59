"""A tiny GGUF (llama, or qwen2: the same tensors plus q/k/v biases), written in milliseconds
with the `gguf` package: a conversion to kill, or an architecture interp's own converter does
not read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def byte_tokens() -> list[str]:
    """GPT-2's byte-level alphabet: one printable character per byte (bytes_to_unicode)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def write_tiny_gguf(
    path: Path, seed: int = 0, d_model: int = 16, layers: int = 1, arch: str = "llama"
) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    tokens = [*byte_tokens(), "Ġt", "<|endoftext|>"]
    vocab, heads, d_ff = len(tokens), 2, 32
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(d_model)
    writer.add_feed_forward_length(d_ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 257 + [3])
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(vocab - 1)
    writer.add_eos_token_id(vocab - 1)

    def weight(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    weight("token_embd.weight", vocab, d_model)
    writer.add_tensor("output_norm.weight", np.ones(d_model, dtype=np.float32))
    for layer in range(layers):
        block = f"blk.{layer}."
        writer.add_tensor(block + "attn_norm.weight", np.ones(d_model, dtype=np.float32))
        writer.add_tensor(block + "ffn_norm.weight", np.ones(d_model, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weight(block + name + ".weight", d_model, d_model)
        if arch == "qwen2":  # Qwen2's attention has q, k and v biases
            for name in ("attn_q", "attn_k", "attn_v"):
                weight(block + name + ".bias", d_model)
        weight(block + "ffn_gate.weight", d_ff, d_model)
        weight(block + "ffn_up.weight", d_ff, d_model)
        weight(block + "ffn_down.weight", d_model, d_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
