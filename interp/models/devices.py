"""Where a model runs and in what precision: `interp.load`'s device, dtype and multi-GPU options
checked and turned into what transformers / TransformerLens / accelerate take.

A model on one device gets `Placement.device`; a model split over several GPUs gets a
`device_map` (accelerate dispatches the layers and moves activations between GPUs; interp
writes no pipeline of its own) and `device` None. Every user mistake is one InterpError line.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from dataclasses import dataclass

import torch

from interp.errors import InterpError

DEVICE_TYPES = ("cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16",
                  "half": "float16"}  # fmt: skip
# accelerate's own placement strategies, passed through as they are.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    """A checked request: one `device`, or a `device_map` (+ `max_memory`) for accelerate."""

    device: torch.device | None
    dtype: torch.dtype
    device_map: str | dict | None = None
    max_memory: dict | None = None


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_device(device: str | torch.device | None) -> torch.device:
    """ "cpu", "cuda", "cuda:1", "mps", or "auto"/None (CUDA where present, else the CPU)."""
    if device is None or device == "auto":
        return torch.device("cuda" if gpu_count() else "cpu")
    asked = str(device)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise InterpError(f"unknown device {asked!r}: use cpu, cuda, cuda:N, mps or auto")
    if device.type == "cuda":
        if not gpu_count():
            raise InterpError(f"device {str(device)!r} asked for CUDA, but this machine has none")
        if device.index is not None and device.index >= gpu_count():
            raise InterpError(f"device {str(device)!r}: this machine has {gpu_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InterpError("device 'mps' asked for Apple's GPU, but this machine has none")
    return device


def parse_dtype(dtype: str | torch.dtype, device_type: str, checkpoint: str | None = None):
    """ "auto" is the checkpoint's own dtype on a GPU and float32 on the CPU (a bf16 matmul on a
    CPU is slow and buys nothing); also "float32", "bfloat16", "float16" or a torch dtype."""
    if dtype == "auto":
        if device_type == "cpu" or checkpoint not in DTYPES:
            return torch.float32
        return DTYPES[checkpoint]
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif isinstance(dtype, str):
        name = _DTYPE_ALIASES.get(dtype.removeprefix("torch."), dtype.removeprefix("torch."))
        if name in DTYPES:
            return DTYPES[name]
    raise InterpError(f"unknown dtype {str(dtype)!r}: use auto, {', '.join(DTYPES)}")


def checkpoint_dtype(config: dict) -> str | None:
    """The dtype a Hugging Face config.json says its weights are in (None if it says none)."""
    value = config.get("dtype") or config.get("torch_dtype")
    return value if isinstance(value, str) else None


def placement(
    device=None,
    dtype="auto",
    n_devices: int | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    checkpoint: str | None = None,
) -> Placement:
    """Check a load request. `n_devices` > 1 becomes TransformerLens's own device_map
    ("balanced" over that many GPUs, with their free memory as budget)."""
    if n_devices is not None and (not isinstance(n_devices, int) or n_devices < 1):
        raise InterpError(f"n_devices must be a whole number >= 1, not {n_devices!r}")
    if n_devices is not None and n_devices > 1 and n_devices > gpu_count():
        raise InterpError(f"n_devices={n_devices}, but this machine has {gpu_count()} GPU(s)")
    split = device_map is not None or (n_devices or 1) > 1
    if not split:
        one = parse_device(device)
        return Placement(one, parse_dtype(dtype, one.type, checkpoint), None, max_memory)
    if device not in (None, "auto"):
        raise InterpError("give either a device or n_devices / device_map, not both")
    if device_map is not None and (n_devices or 1) > 1:
        raise InterpError("give either n_devices or device_map, not both")
    if device_map is None:
        from transformer_lens.utilities.multi_gpu import resolve_device_map

        device_map, max_memory = resolve_device_map(n_devices, None, None, max_memory)
    targets = _map_targets(device_map)
    # "auto" dtype follows where the weights go: the checkpoint's dtype if any GPU is used.
    on_gpu = any(t.type != "cpu" for t in targets) or isinstance(device_map, str) and gpu_count()
    return Placement(None, parse_dtype(dtype, "cuda" if on_gpu else "cpu", checkpoint),
                     device_map, max_memory)  # fmt: skip


def _map_targets(device_map: str | dict) -> list[torch.device]:
    """The devices a device_map names (each checked); a strategy string names none."""
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise InterpError(
                f"unknown device_map {device_map!r}: use a dict of module -> device, or one of "
                f"{', '.join(DEVICE_MAP_STRATEGIES)}"
            )
        return []
    if not isinstance(device_map, dict) or not device_map:
        raise InterpError("device_map must be a non-empty dict of module name -> device")
    targets = []
    for value in device_map.values():
        if value == "disk":
            continue
        targets.append(parse_device(f"cuda:{value}" if isinstance(value, int) else value))
    return targets


def check_device_map(device_map, module_names: Collection[str]) -> None:
    """Refuse a device_map key that names no module or parameter of the model ("" = all)."""
    if not isinstance(device_map, dict):
        return
    names = set(module_names)
    for key in device_map:
        if key != "" and key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InterpError(f"device_map names {key!r}, which the model does not have{hint}")


def input_device(model) -> torch.device:
    """Where token ids must go: the device of the embedding (the first GPU of a split)."""
    return next(model.embed.parameters()).device


def model_dtype(model) -> torch.dtype:
    """The dtype the model computes in (its embedding's)."""
    return next(model.embed.parameters()).dtype
