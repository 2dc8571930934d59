"""`load(name)`: an embedded model, a local checkpoint directory, or a hub name."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from interp import collector
from interp.errors import InterpError
from interp.models import cache
from interp.models.config import read_config
from interp.models.zoo import DEFAULT_MODEL, ZOO, ZooEntry

if TYPE_CHECKING:  # torch loads with the model, not with `interp --help`
    import torch


def load(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "auto",
    n_devices: int | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
):
    """A hooked model (TransformerBridge, TL hook names) with `.tokenizer` and `.cfg`.

    `name` is an embedded model (`interp models` lists them), a directory holding a Hugging
    Face checkpoint or an interp TL-native model, or a hub name (needs the network).
    `device`: "cpu", "cuda", "cuda:1", "mps", or "auto"/None (CUDA where present, else the CPU).
    `dtype`: "auto" (the checkpoint's dtype on a GPU, float32 on the CPU), "float32",
    "bfloat16", "float16" or a torch dtype. `n_devices` / `device_map` / `max_memory` split
    one model over several GPUs (accelerate places the layers; see TransformerLens's
    boot_transformers for their meaning).
    """
    from interp.models.devices import checkpoint_dtype, placement

    def place(config: dict | None = None):
        checkpoint = checkpoint_dtype(config) if config else None
        return placement(device, dtype, n_devices, device_map, max_memory, checkpoint)

    with collector.paused():  # building a bridge makes 100k objects (interp.collector)
        bridge = _load(name, place)
    bridge.interp_name = name
    return bridge


def _load(name: str, place):
    if name in ZOO:
        bridge = _load_entry(ZOO[name], place)
    elif Path(name).is_dir():
        bridge = _load_dir(Path(name), Path(name).resolve().name, place)
    elif Path(name).suffix == ".gguf" and Path(name).is_file():
        bridge = _load_gguf(Path(name), Path(name).stem, place)
    elif Path(name).exists() or name.startswith((".", "/")):
        raise InterpError(f"{name} is not a model directory or a .gguf file")
    else:
        close = difflib.get_close_matches(name, list(ZOO), n=1, cutoff=0.6)
        if close or any(entry.startswith(name) for entry in ZOO):
            guess = close[0] if close else next(e for e in ZOO if e.startswith(name))
            raise InterpError(f"unknown model {name!r}: did you mean {guess!r}? (interp models)")
        from interp.models.hf import load_hub

        place()  # bad options are refused before any network wait
        bridge = load_hub(name, list(ZOO), place)
    return bridge


def _load_entry(entry: ZooEntry, place):
    if entry.kind == "gguf":
        return _load_gguf(entry.path(), entry.name, place)
    return _load_dir(entry.path(), entry.name, place)


def _load_gguf(path: Path, name: str, place):
    from interp.models.hf import load_hf_dir

    # Checked before the (first-use) conversion, so a bad option never waits for it.
    place()
    checkpoint = gguf_checkpoint(path)
    return load_hf_dir(checkpoint, name, place(read_config(checkpoint)))


def _load_dir(path: Path, name: str, place):
    from interp.models.hf import load_hf_dir

    config = read_config(path)
    if config.get("architecture") == "TransformerLensNative":
        from interp.models.native import load_native

        return load_native(path, place(config))
    return load_hf_dir(path, name, place(config))


def gguf_checkpoint(path: Path, reader: str = "auto") -> Path:
    """The cached HF checkpoint converted from a GGUF file (converted on first use): llama by
    interp's own converter, any other architecture by transformers' GGUF support
    (`reader="transformers"` forces it for llama too; it is cached apart)."""
    from interp.models import gguf

    # A verified llama entry says what the file is: reading a GGUF's header (its whole
    # vocabulary) costs a second or more, only worth paying before a conversion.
    if reader == "auto" and (hit := cache.verified(path, "gguf")) is not None:
        return hit
    arch = gguf.architecture(path)  # an architecture neither reads: one line, nothing cached
    if reader == "transformers" or arch != "llama":

        def build_hf(out: Path) -> None:
            gguf.write_with_transformers(path, out)

        return cache.get_or_build(path, "gguf-hf", build_hf)

    def build(out: Path) -> None:
        from safetensors.torch import save_file

        config, state, tokenizer_json, tokenizer_config = gguf.convert(path)
        save_file(state, out / "model.safetensors")
        (out / "config.json").write_text(json.dumps(config, indent=1))
        (out / "tokenizer.json").write_text(tokenizer_json)
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))

    return cache.get_or_build(path, "gguf", build)


__all__ = ["load", "gguf_checkpoint", "ZOO", "DEFAULT_MODEL", "InterpError"]
