"""Reading dictionaries from disk: SAELens's saved format and Gemma Scope's params.npz.

SAELens: a directory with `cfg.json` and `sae_weights.safetensors` (W_enc, b_enc, W_dec,
b_dec, and threshold / W_skip where the architecture has them). cfg.json keys read:
architecture, d_in, d_sae, d_out, k, apply_b_dec_to_input, normalize_activations,
rescale_acts_by_decoder_norm, hook_name and hook_name_out (at the top level in SAELens < 6,
under `metadata` or `meta` from 6 on). Architectures: standard, jumprelu, topk, batchtopk, and
the transcoder names (transcoder, skip_transcoder, jumprelu_transcoder).

Gemma Scope: `params.npz` with the same five arrays (a JumpReLU SAE that never subtracts b_dec
from its input). The file names no hook, so it comes from `hook=` or from a cfg.json beside it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from interp.errors import InterpError
from interp.features.dictionary import ARCHITECTURES, NORMALISATIONS, Dictionary

CFG, WEIGHTS, NPZ = "cfg.json", "sae_weights.safetensors", "params.npz"
SHIPPED = Path(__file__).parent / "weights"  # dictionaries trained by experiments/, by name
TRANSCODERS = {"transcoder": "standard", "skip_transcoder": "standard",
               "jumprelu_transcoder": "jumprelu"}  # fmt: skip


def load(path: str | Path, *, hook: str | None = None, hook_out: str | None = None) -> Dictionary:
    """The dictionary saved at `path` (a SAELens directory, a params.npz, a directory holding
    one, or the name of one shipped in interp/features/weights). `hook` / `hook_out` name (or
    override) where it reads and writes."""
    path = Path(path)
    if not path.exists() and (SHIPPED / path).is_dir() and len(path.parts) == 1:
        path = SHIPPED / path
    if not path.exists():
        names = ", ".join(shipped()) or "none"
        raise InterpError(f"no dictionary at {path} (shipped dictionaries: {names})")
    if path.is_dir() and (path / WEIGHTS).is_file():
        return _saelens(path, hook, hook_out)
    npz = path / NPZ if path.is_dir() else path
    if npz.suffix == ".npz" and npz.is_file():
        return _gemma_scope(npz, hook, hook_out)
    raise InterpError(
        f"{path} holds no dictionary: expected {CFG} + {WEIGHTS} (SAELens) or {NPZ} (Gemma Scope)"
    )


def shipped() -> list[str]:
    """The names of the dictionaries shipped with interp."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / WEIGHTS).is_file())


def _read_cfg(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InterpError(f"cannot read {path}: {exc}") from None
    if not isinstance(cfg, dict):
        raise InterpError(f"{path} is not a JSON object")
    return cfg


def _meta(cfg: dict, key: str):
    """A metadata key where each SAELens version puts it: top level, `metadata`, `meta`."""
    for place in (cfg, cfg.get("metadata") or {}, cfg.get("meta") or {}):
        if isinstance(place, dict) and place.get(key) is not None:
            return place[key]
    return None


def _saelens(directory: Path, hook: str | None, hook_out: str | None) -> Dictionary:
    cfg_path = directory / CFG
    if not cfg_path.is_file():
        raise InterpError(f"{directory} has {WEIGHTS} but no {CFG}")
    cfg = _read_cfg(cfg_path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(directory / WEIGHTS)
    except (SafetensorError, OSError) as exc:
        raise InterpError(f"cannot read {directory / WEIGHTS}: {exc}") from None
    arch = cfg.get("architecture", "standard")
    if arch in TRANSCODERS:
        if arch == "skip_transcoder" and "W_skip" not in weights:
            raise InterpError(f"{directory}: a skip_transcoder without W_skip")
        arch = TRANSCODERS[arch]
    hook_in = hook or _meta(cfg, "hook_name")
    out = hook_out or _meta(cfg, "hook_name_out") or hook_in
    return build(directory.name, str(directory), arch, weights, hook_in, out, cfg)


def _gemma_scope(path: Path, hook: str | None, hook_out: str | None) -> Dictionary:
    try:
        with np.load(path) as npz:
            weights = {name: torch.from_numpy(np.asarray(npz[name])) for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InterpError(f"cannot read {path}: {exc}") from None
    beside = path.parent / CFG
    cfg = _read_cfg(beside) if beside.is_file() else {}
    hook_in = hook or _meta(cfg, "hook_name")
    out = hook_out or _meta(cfg, "hook_name_out") or hook_in
    defaults = {"apply_b_dec_to_input": False}  # Gemma Scope encodes x, not x - b_dec
    name = path.parent.name if path.name == NPZ else path.stem
    return build(name, str(path), "jumprelu", weights, hook_in, out, {**defaults, **cfg})


def build(name, where, arch, weights, hook_in, hook_out, cfg) -> Dictionary:
    if arch not in ARCHITECTURES:
        raise InterpError(
            f"{where}: architecture {arch!r} is not read here (use one of "
            f"{', '.join(ARCHITECTURES + tuple(TRANSCODERS))})"
        )
    if not hook_in:
        raise InterpError(f"{where} names no hook: give hook= (e.g. blocks.6.hook_resid_post)")
    needed = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if arch == "jumprelu" else [])
    missing = [n for n in needed if n not in weights and not (
        n == "threshold" and "log_threshold" in weights)]  # fmt: skip
    if missing:
        raise InterpError(f"{where}: no {', '.join(missing)} among its weights")
    t = {n: w.float() for n, w in weights.items()}
    if "threshold" not in t and "log_threshold" in t:  # SAELens's training-time JumpReLU
        t["threshold"] = t["log_threshold"].exp()
    d_in, d_sae = t["W_enc"].shape if t["W_enc"].ndim == 2 else (None, None)
    d_out = t["W_dec"].shape[-1]
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_out),
                "b_dec": (d_out,), "threshold": (d_sae,), "W_skip": (d_out, d_in)}  # fmt: skip
    if arch == "batchtopk" and "threshold" not in t and "topk_threshold" in t:
        t["threshold"] = t["topk_threshold"].reshape(-1).expand(d_sae)  # a scalar in training
    for n, shape in expected.items():
        if n in t and (d_in is None or tuple(t[n].shape) != shape):
            raise InterpError(
                f"{where}: {n} has shape {list(t[n].shape)}, expected {list(shape)} "
                f"(d_in={d_in}, d_sae={d_sae}, d_out={d_out})"
            )
    for key, size in (("d_in", d_in), ("d_sae", d_sae), ("d_out", d_out)):
        if cfg.get(key) is not None and cfg[key] != size:
            raise InterpError(f"{where}: cfg.json says {key}={cfg[key]}, the weights {size}")
    k = cfg.get("k")
    if arch in ("topk", "batchtopk") and not (isinstance(k, int | float) and 0 < k <= d_sae):
        raise InterpError(f"{where}: a {arch} dictionary needs k in (0, {d_sae}], not {k!r}")
    norm = cfg.get("normalize_activations") or "none"
    if norm not in NORMALISATIONS:
        raise InterpError(f"{where}: normalize_activations {norm!r} is not one of {NORMALISATIONS}")
    return Dictionary(
        name=name, architecture=arch, W_enc=t["W_enc"], b_enc=t["b_enc"], W_dec=t["W_dec"],
        b_dec=t["b_dec"], hook_in=hook_in, hook_out=hook_out, threshold=t.get("threshold"),
        W_skip=t.get("W_skip"), k=k if arch in ("topk", "batchtopk") else None,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        normalize_activations=norm,
        rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        path=where, meta={k: v for k, v in cfg.items() if isinstance(v, str | int | float | bool)},
    )  # fmt: skip
