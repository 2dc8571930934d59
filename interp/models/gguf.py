"""GGUF (llama.cpp) -> Hugging Face Llama: config, float32 state dict and tokenizer.

The GGUF stores Q/K rows in llama.cpp's adjacent-pair rotary layout; Hugging Face's Llama
rotates halves, so those rows are un-permuted here (the inverse of convert_hf_to_gguf.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from interp.errors import InterpError

# GGUF tensor name (after "blk.{l}.") -> HF Llama parameter name.
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def _reader(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # gguf raises ValueError/struct errors/IndexError on damage
        raise InterpError(
            f"cannot read GGUF file {path}: {exc.__class__.__name__}: {exc}"
        ) from None


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def llama_config(reader) -> dict:
    """The Hugging Face LlamaConfig fields this file describes."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise InterpError(f"GGUF architecture {arch!r} is not supported (only 'llama')")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    d_model = int(_field(reader, "llama.embedding_length"))
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": d_model,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        "head_dim": int(_field(reader, "llama.rope.dimension_count", d_model // n_heads)),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, "llama.context_length")),
        "vocab_size": int(_field(reader, "llama.vocab_size")),
        "tie_word_embeddings": not has_output,
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id", 2)),
        "pad_token_id": int(_field(reader, "tokenizer.ggml.padding_token_id", 2)),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }


def _unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Adjacent-pair rotary rows (llama.cpp) -> rotate-half rows (Hugging Face)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama_state_dict(reader, config: dict) -> dict[str, torch.Tensor]:
    """Dequantised float32 weights under Hugging Face Llama names."""
    from gguf.quants import dequantize

    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = tensor.name
        try:
            array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        except Exception as exc:
            raise InterpError(f"cannot dequantise GGUF tensor {name}: {exc}") from None
        if name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif name == "output_norm.weight":
            key = "model.norm.weight"
        elif name == "output.weight":
            key = "lm_head.weight"
        elif name.startswith("blk."):
            _, layer, rest = name.split(".", 2)
            if rest not in _BLOCK_NAMES:
                continue
            key = f"model.layers.{layer}.{_BLOCK_NAMES[rest]}"
            if rest == "attn_q.weight":
                array = _unpermute_rotary(array, config["num_attention_heads"])
            elif rest == "attn_k.weight":
                array = _unpermute_rotary(array, config["num_key_value_heads"])
        else:
            continue
        state[key] = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    expected = 2 + 9 * config["num_hidden_layers"] + (0 if config["tie_word_embeddings"] else 1)
    if len(state) != expected:
        raise InterpError(
            f"GGUF holds {len(state)} usable tensors, expected {expected}: truncated?"
        )
    return state


def tokenizer_json(reader) -> str:
    """A `tokenizers` JSON for the file's byte-level BPE (llama.cpp 'gpt2' model).

    The 'smollm' pre-tokenizer splits every digit on its own before the GPT-2 regex, as the
    original SmolLM2 tokenizer does.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if _field(reader, "tokenizer.ggml.model") != "gpt2":
        raise InterpError("only byte-level BPE ('gpt2') GGUF tokenizers are supported")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if _field(reader, "tokenizer.ggml.pre") == "smollm":
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    control = 3  # llama.cpp token type CONTROL
    tokenizer.add_special_tokens(
        [
            AddedToken(tok, special=True, normalized=False)
            for tok, t in zip(tokens, types)
            if t == control
        ]
    )
    return tokenizer.to_str()


def tokenizer_config(reader) -> dict:
    tokens = _field(reader, "tokenizer.ggml.tokens")

    def token(key: str):
        idx = _field(reader, key)
        return None if idx is None else tokens[int(idx)]

    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "clean_up_tokenization_spaces": False,
    }


def convert(path: Path) -> tuple[dict, dict[str, torch.Tensor], str, dict]:
    """(hf config, state dict, tokenizer.json text, tokenizer config) for a GGUF file."""
    reader = _reader(path)
    config = llama_config(reader)
    return (
        config,
        llama_state_dict(reader, config),
        tokenizer_json(reader),
        tokenizer_config(reader),
    )
