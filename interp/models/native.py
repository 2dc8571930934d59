"""TL-native models (token ids in, no tokenizer): a directory of config.json + model.safetensors.

config.json is a TransformerBridgeConfig dict with `"architecture": "TransformerLensNative"`;
model.safetensors holds the bridge's state dict under TL names (embed.weight,
blocks.0.attn.q.weight, ...), so the file reads the same as the hooks an analysis sees.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
from transformer_lens.model_bridge.sources.native import NativeModel, boot

from interp.errors import InterpError
from interp.models.config import read_config
from interp.models.devices import Placement

ARCHITECTURE = "TransformerLensNative"
# The native attention allocates an n_ctx x n_ctx causal mask per layer: keep it small.
MAX_N_CTX = 2048


def load_native(path: Path, place: Placement | None = None) -> TransformerBridge:
    """The TL-native model saved in `path` (by `save_native`), in eval mode, tokenizer None,
    on `place`'s device and dtype (default float32 on the CPU; it cannot be split)."""
    path = Path(path)
    if place is not None and place.device is None:
        raise InterpError(f"{path.name} is a TL-native model: it loads on one device, not split")
    config = _native_config(path)
    weights_file = path / "model.safetensors"
    if not weights_file.is_file():
        raise InterpError(f"{path} has no model.safetensors")
    try:
        state = load_file(weights_file)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InterpError(f"{weights_file} is corrupt or truncated: {_first_line(exc)}") from None
    # The weights are overwritten next, so skip the random init.
    bridge = boot({**config, "init_weights": False}, model_name=path.name)
    try:
        bridge.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InterpError(
            f"{weights_file} does not match {path / 'config.json'}: {_first_line(exc)}"
        ) from None
    if place is not None:
        torch.nn.Module.to(bridge, place.device, place.dtype)  # quietly (the bridge prints)
        bridge.cfg.device, bridge.cfg.dtype = str(place.device), place.dtype
    bridge.eval()
    return bridge


def save_native(
    model: TransformerBridge | NativeModel,
    cfg: dict[str, Any] | TransformerBridgeConfig,
    path: Path,
) -> None:
    """Write `model` (a bridge, or a bare NativeModel) and its config so `load_native` reads it."""
    path = Path(path)
    config = cfg.to_dict() if isinstance(cfg, TransformerBridgeConfig) else dict(cfg)
    config = {key: value for key, value in config.items() if _is_json(value)}
    config["architecture"] = ARCHITECTURE
    if not isinstance(model, TransformerBridge):
        # Wrapping replaces submodules in place: wrap a copy so the caller's module is untouched.
        model = build_bridge_from_module(
            copy.deepcopy(model),
            architecture=ARCHITECTURE,
            tl_config=TransformerBridgeConfig.from_dict(config),
        )
    # safetensors refuses tensors that share storage; contiguous copies own theirs.
    state = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")


def _native_config(path: Path) -> dict[str, Any]:
    config, config_file = read_config(path), path / "config.json"
    if config.get("architecture") != ARCHITECTURE:
        raise InterpError(f"{config_file} is not a TL-native config (architecture {ARCHITECTURE})")
    n_ctx = config.get("n_ctx", 0)
    if not isinstance(n_ctx, int) or not 0 < n_ctx <= MAX_N_CTX:
        raise InterpError(f"{config_file}: n_ctx must be an integer in 1..{MAX_N_CTX}, not {n_ctx}")
    return config


def _is_json(value: Any) -> bool:
    # to_dict() carries a torch.dtype; the saved weights are float32 anyway.
    return not isinstance(value, torch.dtype)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
