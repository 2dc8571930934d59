"""`load(name)`: an embedded model, a local checkpoint directory, or a hub name."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from interp.errors import InterpError
from interp.models import cache
from interp.models.config import read_config
from interp.models.zoo import DEFAULT_MODEL, ZOO, ZooEntry


def load(name: str = DEFAULT_MODEL):
    """A hooked model (TransformerBridge, TL hook names) with `.tokenizer` and `.cfg`.

    `name` is an embedded model (`interp models` lists them), a directory holding a Hugging
    Face checkpoint or an interp TL-native model, or a hub name (needs the network).
    """
    from interp.models.hf import load_hf_dir, load_hub

    if name in ZOO:
        bridge = _load_entry(ZOO[name])
    elif Path(name).is_dir():
        bridge = _load_dir(Path(name), Path(name).resolve().name)
    elif Path(name).suffix == ".gguf" and Path(name).is_file():
        bridge = load_hf_dir(gguf_checkpoint(Path(name)), Path(name).stem)
    elif Path(name).exists() or name.startswith((".", "/")):
        raise InterpError(f"{name} is not a model directory or a .gguf file")
    else:
        close = difflib.get_close_matches(name, list(ZOO), n=1, cutoff=0.6)
        if close or any(entry.startswith(name) for entry in ZOO):
            guess = close[0] if close else next(e for e in ZOO if e.startswith(name))
            raise InterpError(f"unknown model {name!r}: did you mean {guess!r}? (interp models)")
        bridge = load_hub(name, list(ZOO))
    bridge.interp_name = name
    return bridge


def _load_entry(entry: ZooEntry):
    from interp.models.hf import load_hf_dir

    if entry.kind == "gguf":
        return load_hf_dir(gguf_checkpoint(entry.path()), entry.name)
    return _load_dir(entry.path(), entry.name)


def _load_dir(path: Path, name: str):
    from interp.models.hf import load_hf_dir

    if read_config(path).get("architecture") == "TransformerLensNative":
        from interp.models.native import load_native

        return load_native(path)
    return load_hf_dir(path, name)


def gguf_checkpoint(path: Path) -> Path:
    """The cached HF checkpoint converted from a GGUF file (converted on first use)."""

    def build(out: Path) -> None:
        from safetensors.torch import save_file

        from interp.models import gguf

        config, state, tokenizer_json, tokenizer_config = gguf.convert(path)
        save_file(state, out / "model.safetensors")
        (out / "config.json").write_text(json.dumps(config, indent=1))
        (out / "tokenizer.json").write_text(tokenizer_json)
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))

    return cache.get_or_build(path, "gguf", build)


__all__ = ["load", "gguf_checkpoint", "ZOO", "DEFAULT_MODEL", "InterpError"]
