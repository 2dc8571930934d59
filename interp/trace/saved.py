"""Reading a saved trace back (`Trace.load`): a damaged or hostile file is one `InterpError`
line, refused before any report code reads it (types, ranges and sizes; see interp.validate)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from interp import validate
from interp.errors import InterpError

# What `trace()` writes into meta and what the frames and reports read back from it.
META_KEYS = {"model": str, "cfg": dict, "capture": [str], "max_new_tokens": int, "sampling": dict}
META_OPTIONAL = {
    "texts": [[str]], "empty_frames": dict, "report_notes": dict, "patch": dict,
    "command": (str, type(None)), "bos_added": [bool], "shapes": list, "device": str,
    "full_attention": bool,
}  # fmt: skip
SAMPLING = {"temperature": float, "top_k": int, "top_p": float, "seed": int}
# ModelFacts as JSON (interp.trace.facts); sizes bounded so no report allocates by them.
CFG = {"n_layers": int, "n_heads": int, "n_key_value_heads": int, "d_model": int, "d_head": int,
       "d_vocab": int, "n_ctx": int}  # fmt: skip
CFG_OPTIONAL = {"moe_layers": [int], "n_experts": int, "top_k": int, "router": (str, type(None)),
                "renormalise_top_k": bool, "n_shared": int, "dtype": str,
                "layer_kinds": [[str]], "n_streams": int, "memory_shapes": dict,
                "router_families": [str]}  # fmt: skip
MAX_SIZE = 2**24
MAX_PROMPT_CHARS = 2**24  # a prompt's text as kept in meta: far beyond any context
TOKENS = {"prompt": "int", "pos": "int", "token_id": "int", "token": "str", "generated": "bool"}


def read_meta(directory: Path) -> dict:
    meta_file = Path(directory) / "meta.json"
    meta = validate.fields(validate.json_file(meta_file), meta_file, META_KEYS, META_OPTIONAL)
    validate.fields(meta["sampling"], f"{meta_file} 'sampling'", {}, SAMPLING)
    cfg = validate.fields(meta["cfg"], f"{meta_file} 'cfg'", CFG, CFG_OPTIONAL)
    for key in (*CFG, "n_experts", "top_k", "n_shared", "n_streams"):
        low = 0 if key in ("n_experts", "top_k", "n_shared") else 1
        validate.integer(cfg.get(key, low), f"{meta_file} 'cfg' {key}", low=low, high=MAX_SIZE)
    if set(cfg) - set(CFG) - set(CFG_OPTIONAL):
        unknown = sorted(set(cfg) - set(CFG) - set(CFG_OPTIONAL))
        raise InterpError(f"{meta_file}: 'cfg' does not describe a model (unknown {unknown})")
    if cfg["n_heads"] % cfg["n_key_value_heads"]:
        raise InterpError(f"{meta_file}: 'cfg' n_heads is not a multiple of n_key_value_heads")
    if cfg.get("dtype", "float32") not in ("float32", "float16", "bfloat16", "float64"):
        raise InterpError(f"{meta_file}: 'cfg' dtype {cfg['dtype']!r} is not a float dtype")
    for pair in meta.get("texts", []):
        if len(pair) != 2 or sum(map(len, pair)) > MAX_PROMPT_CHARS:
            raise InterpError(
                f"{meta_file}: 'texts' holds a pair that is not (prompt, continuation) of at "
                f"most {MAX_PROMPT_CHARS:,} characters"
            )
    for key in ("empty_frames", "report_notes"):
        if not all(isinstance(v, str) for v in meta.get(key, {}).values()):
            raise InterpError(f"{meta_file}: '{key}' must map names to reasons (strings)")
    if "patch" in meta:
        validate.fields(meta["patch"], f"{meta_file} 'patch'", {"answer": str},
                        {"wrong": (str, type(None))})  # fmt: skip
    return meta


def read_frames(directory: Path, meta: dict) -> dict[str, pd.DataFrame]:
    """Every `<frame>.parquet` in `directory`; a corrupt, truncated or empty file is named, and
    every index column (prompt, pos, layer, head, ...) must lie within the model and the
    prompts the tokens frame describes."""
    import pyarrow

    frames = {}
    for path in sorted(Path(directory).glob("*.parquet")):
        try:
            frames[path.stem] = pd.read_parquet(path)
        except (pyarrow.ArrowException, OSError, ValueError, TypeError, MemoryError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InterpError(f"{path} is corrupt or truncated: {first[:200]}") from None
    _check_frames(Path(directory), frames, meta)
    return frames


def _check_frames(directory: Path, frames: dict[str, pd.DataFrame], meta: dict) -> None:
    cfg = meta["cfg"]
    if "tokens" not in frames:
        raise InterpError(f"{directory} has no tokens.parquet: it is not a saved trace")
    source = directory / "tokens.parquet"
    tokens = validate.table(frames["tokens"], source, TOKENS, {"token_id": cfg["d_vocab"],
                                                                "pos": cfg["n_ctx"]})  # fmt: skip
    if tokens.empty:
        raise InterpError(f"{source} holds no tokens")
    # Prompts 0..P-1, each with positions 0..T-1 in order: the table the others index into.
    lengths = tokens.groupby("prompt", sort=True).size()
    n_prompts = len(lengths)
    ordered = tokens.sort_values(["prompt", "pos"], kind="stable")
    runs = ordered.groupby("prompt").cumcount().to_numpy()
    if list(lengths.index) != list(range(n_prompts)) or (ordered["pos"].to_numpy() != runs).any():
        raise InterpError(f"{source}: prompts must be numbered 0..P-1, each with positions "
                          f"0..T-1 once; this table is short or out of order")  # fmt: skip
    if "texts" in meta and len(meta["texts"]) != n_prompts:
        raise InterpError(f"{directory / 'meta.json'}: 'texts' has {len(meta['texts'])} "
                          f"prompts, tokens.parquet {n_prompts}")  # fmt: skip
    longest = int(lengths.max())
    bounds = {"prompt": n_prompts, "pos": longest, "query": longest, "key": longest,
              "layer": cfg["n_layers"] + 1, "head": cfg["n_heads"],
              "kv_head": cfg["n_key_value_heads"],
              # routing numbers shared experts on from n_experts (interp.trace.frames)
              "expert": max(cfg.get("n_experts", 0) + cfg.get("n_shared", 0), 1),
              "token_id": cfg["d_vocab"], "target_id": cfg["d_vocab"]}  # fmt: skip
    for name, frame in frames.items():
        present = {c: b for c, b in bounds.items() if c in frame.columns}
        # Analyses write -1 for "no head" / "the embedding" beside real indices.
        low = -1 if name.startswith("report_") else 0
        validate.table(frame, directory / f"{name}.parquet", {}, present, low=low)
