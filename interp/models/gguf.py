"""GGUF (llama.cpp) -> a Hugging Face checkpoint directory (config, float32 safetensors,
tokenizer), written once into the cache (interp.models.gguf_checkpoint).

Two readers: interp's own for the llama architecture (the GGUF stores Q/K rows in llama.cpp's
adjacent-pair rotary layout; Hugging Face's Llama rotates halves, so those rows are un-permuted
here, the inverse of convert_hf_to_gguf.py), and transformers' GGUF support (which dequantises
and renames) for every other architecture it reads. Both give the same logits on a llama file
(tests/test_gguf_archs.py); benchmarks/gguf_paths.py times them side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from interp import validate
from interp.errors import InterpError
from interp.validate import config_fields

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


def architecture(path: Path) -> str:
    """The file's `general.architecture`, after checking that some reader here reads it and
    that its tensors, dequantised to float32, fit in the memory free (before any is read)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    reader = _reader(path)
    arch = _field(reader, "general.architecture")
    if arch != "llama" and arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise InterpError(
            f"GGUF architecture {arch!r} is not supported: neither interp's converter (llama) "
            f"nor transformers' GGUF support ({', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}) "
            "reads it"
        )
    params = sum(int(t.n_elements) for t in reader.tensors)
    free = validate.available_memory(torch.device("cpu"))
    validate.fits_in_memory(params * 4, free, f"{path.name} ({params:,} parameters in float32)",
                            "the CPU")  # fmt: skip
    return str(arch)


def write_with_transformers(path: Path, out: Path) -> None:
    """`path` read (and dequantised) by transformers' GGUF support, saved into `out` as a
    float32 safetensors checkpoint with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar on every conversion is noise
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:  # transformers' GGUF reader raises many kinds on a file it refuses
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InterpError(
            f"transformers cannot read {path}: {type(exc).__name__}: {reason}"
        ) from None
    # transformers refuses to save_pretrained a model it read from GGUF: the weights (tied
    # ones once, which save_model sees to) and the config go out directly, float32.
    from safetensors.torch import save_model

    save_model(model, str(out / "model.safetensors"))
    config = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    config.update(dtype="float32", architectures=[type(model).__name__])
    (out / "config.json").write_text(json.dumps(config, indent=1, default=str))
    tokenizer.save_pretrained(out)


def llama_config(reader) -> dict:
    """The Hugging Face LlamaConfig fields this file describes."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise InterpError(f"GGUF architecture {arch!r} is not llama")
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
    try:
        config = config_fields(llama_config(reader), path)
    except (TypeError, ValueError, IndexError) as exc:  # a field missing (None) or malformed
        raise InterpError(f"{path}: a llama GGUF field is missing or malformed ({exc})") from None
    return (
        config,
        llama_state_dict(reader, config),
        tokenizer_json(reader),
        tokenizer_config(reader),
    )
