"""Hugging Face checkpoints (a local directory, or a hub name when online) -> TL bridge."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError

from interp import validate
from interp.errors import InterpError
from interp.models import kernel
from interp.models.config import read_config
from interp.models.devices import Placement, check_device_map

# What a damaged or incomplete checkpoint raises inside transformers / safetensors.
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, EOFError, SafetensorError)


def load_hf_dir(path: Path, name: str | None = None, place: Placement | None = None):
    """A local HF checkpoint (config.json + safetensors [+ tokenizer]) as a TransformerBridge,
    placed as `place` says (default: float32 on the CPU). A split model is dispatched by
    accelerate (transformers' device_map), as TransformerLens's boot_transformers does."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar on every load is noise

    architectures = read_config(path).get("architectures") or []
    if not architectures:
        raise InterpError(f"{path}/config.json names no architecture ('architectures' is empty)")
    place = place or Placement(torch.device("cpu"), torch.float32)
    _check_weights_are_safetensors(path)
    _check_against_config(path, place)
    if place.device_map is not None:
        check_device_map(place.device_map, _module_names(path))
        where = {"device_map": place.device_map, "max_memory": place.max_memory}
    elif place.device.type != "cpu":
        where = {"device_map": {"": place.device}}  # straight onto the GPU, no CPU copy first
    else:
        where = {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, attn_implementation="eager", dtype=place.dtype,
            use_safetensors=True, **where,
        )  # fmt: skip
    except _LOAD_ERRORS as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InterpError(f"cannot load the checkpoint in {path}: {first_line}") from None
    tokenizer = _local_tokenizer(path)
    _check_vocab(tokenizer, model.get_input_embeddings().num_embeddings, path)
    return bridge_hf_model(model, name or path.name, tokenizer)


def bridge_hf_model(model, name: str, tokenizer=None):
    """A transformers causal LM already in memory (on any device or devices) as a bridge."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformer_lens.utilities.multi_gpu import count_unique_devices, find_embedding_device

    model.eval()
    architecture = model.config.architectures[0]
    try:
        bridge = build_bridge_from_module(
            model,
            architecture=architecture,
            hf_config=model.config,
            tokenizer=tokenizer,
            model_name=name,
            device=find_embedding_device(model),  # None on one device: read from the weights
        )
    except ValueError as exc:
        if not str(exc).startswith("Unsupported architecture"):
            raise
        raise InterpError(_no_bridge(model.config, architecture)) from None
    bridge.cfg.n_devices = count_unique_devices(model)
    if tokenizer is not None:
        # TL swaps in a copy of the tokenizer that always adds BOS (its setter would again):
        # interp encodes text as the checkpoint's own tokenizer does (interp.prompts), and
        # tells TL's to_tokens whether that tokenizer adds BOS itself.
        from interp.prompts import default_bos

        bridge._tokenizer = tokenizer
        bridge.cfg.tokenizer_prepends_bos = default_bos(tokenizer) is not None
    bridge.eval()
    kernel.install(bridge)  # SDPA unless a hook needs eager attention
    return bridge


def _no_bridge(config, architecture: str) -> str:
    from interp.trace.kinds import UNREAD_NAMES

    config = config.get_text_config()
    names = UNREAD_NAMES.get(config.model_type, {})
    types = sorted({names.get(t, t) for t in getattr(config, "layer_types", None) or []})
    kinds = f" (layer kinds: {', '.join(types)})" if types else ""
    return (
        f"interp cannot read {architecture}{kinds}: TransformerLens has no bridge for it, so "
        "nothing can be captured; run it with transformers directly"
    )


def _empty_model(path: Path):
    """The checkpoint's model built on the meta device: no memory, no weights read."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:  # torch.device("meta") too: some modules allocate a tensor before registering it
        with init_empty_weights(), torch.device("meta"):
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    except Exception as exc:  # transformers' strict config classes raise many kinds: all mean
        # that the config describes no model this version can build
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InterpError(f"{path}/config.json does not describe a model: {first_line}") from None


def _module_names(path: Path) -> set[str]:
    """Module and parameter names of the checkpoint's model, so a device_map is checked
    before anything loads."""
    model = _empty_model(path)
    return {name for name, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}


_LAYER = re.compile(r"\blayers\.(\d+)\.")
# Weights in these formats are Python pickles: loading one can run code, so none is read.
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def _check_weights_are_safetensors(path: Path) -> None:
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for pattern in _PICKLES for p in path.glob(pattern))
        found = f"its weights are pickled ({', '.join(pickled[:3])})" if pickled else "none"
        raise InterpError(f"{path}: interp reads weights only from .safetensors files; {found}")


def _check_against_config(path: Path, place: Placement) -> None:
    """Before any allocation: the layers the config asks for are among the layers the weights
    hold (transformers would fill missing ones with random numbers, with only a warning), and
    the weights' size from the config (parameters counted on the meta device, at the dtype
    they load in) fits in the memory free where they go."""
    from safetensors import safe_open

    model = _empty_model(path)
    wanted = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    held: dict[str, set[int]] = {}  # per stack ("model.", "model.vision_tower...") its layers
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(file, "pt") as weights:
                for key in weights.keys():
                    if m := _LAYER.search(key):
                        held.setdefault(key[: m.start()], set()).add(int(m[1]))
        except (SafetensorError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise InterpError(f"cannot load the checkpoint in {path}: {file.name} is not a "
                              f"whole safetensors file ({reason})") from None  # fmt: skip
    # Extra layers may be meant (DeepSeek-V3's multi-token-prediction layer): missing ones not.
    if held and isinstance(wanted, int) and not any(set(range(wanted)) <= g for g in held.values()):
        most = max(held.values(), key=len)
        raise InterpError(f"{path}: config.json asks for {wanted} layers; the weights hold "
                          f"{len(most)} (layers {min(most)}..{max(most)})")  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    needed = params * torch.finfo(place.dtype).bits // 8
    if place.device_map is not None:  # accelerate spreads it; the sum of the devices bounds it
        devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        devices.append(torch.device("cpu"))
        where = "the GPUs and the CPU together"
        available = sum(validate.available_memory(d) for d in devices)
    else:
        where = f"the {place.device.type} device" if place.device.type != "cpu" else "the CPU"
        available = validate.available_memory(place.device)
    what = f"{path.name} ({params:,} parameters in {str(place.dtype).removeprefix('torch.')})"
    validate.fits_in_memory(needed, available, what, where)


def _local_tokenizer(path: Path):
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except _LOAD_ERRORS as exc:
        raise InterpError(f"cannot load the tokenizer in {path}: {exc}") from None


def _check_vocab(tokenizer, n_embeddings: int, path: Path) -> None:
    """Every id the tokenizer can produce must have an embedding row (else an IndexError
    deep inside the first forward pass)."""
    if tokenizer is None:
        return
    top = max(tokenizer.get_vocab().values(), default=-1) + 1
    if top > n_embeddings:
        raise InterpError(
            f"{path}: the tokenizer yields ids up to {top - 1}, but the model embeds only "
            f"{n_embeddings} tokens (vocab_size): tokenizer and weights do not match"
        )


def load_hub(name: str, embedded: list[str], place: Callable[[dict], Placement]):
    """A hub model through the bridge (which hands a device_map to accelerate); offline, one
    line naming the embedded models. `place(config)` checks the device options once the hub
    config (and so the checkpoint's dtype) is known."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoConfig

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or not _hub_reachable():
        # Without this, huggingface_hub retries for ~30 s before giving up; a user's local HF
        # cache can still serve the model offline. huggingface_hub reads the variable once, at
        # import (transformers has imported it by now), so its constant is set too.
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        where = place(AutoConfig.from_pretrained(name).to_dict())
        options = {"dtype": where.dtype, "device": where.device}
        if where.device_map is not None:
            options = {"dtype": where.dtype, "device_map": where.device_map,
                       "max_memory": where.max_memory}  # fmt: skip
        bridge = TransformerBridge.boot_transformers(name, **options)
    except InterpError:
        raise
    except Exception as exc:  # hub errors come in many classes; all mean "not here"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InterpError(
            f"unknown model {name!r} (not embedded, and the hub gave: {reason[:160]}); "
            f"embedded models: {', '.join(embedded)}"
        ) from None
    bridge.eval()
    kernel.install(bridge)
    return bridge


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True
