"""Reading a saved survey back (`Survey.load`): its meta and tables are checked against what
the survey report reads (types, sizes, index ranges) before any of it is used, so a damaged
or hostile directory is one `InterpError` line (see interp.validate)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from interp import validate
from interp.errors import InterpError
from interp.trace.saved import CFG

META = {"survey": int, "model": str, "data": str, "stats": [str], "seq_len": int, "tokens": int,
        "windows": int, "domains": [str], "world_size": int, "cfg": dict}  # fmt: skip
META_OPTIONAL = {"batch_size": int, "seed": int, "token_cap": (int, type(None)), "batches": int,
                 "lens_every": (int, type(None)), "command": (str, type(None)),
                 "documents": [int]}  # fmt: skip
HEAD_SCORES = ("previous_token", "induction", "duplicate_token", "sink", "entropy")

# Tables in groups: when a group's first table is there, the report reads all of them.
TABLES = {
    "experts": {
        "experts": {"layer": "int", "expert": "int", "count": "int", "load": "float"},
        "expert_layers": {"layer": "int"},
        "coactivation": {"layer": "int", "expert": "int", "partner": "int", "count": "int"},
        "domain_load": {"layer": "int", "domain": "str", "expert": "int", "load": "float"},
        "domain_divergence": {},
        "expert_tokens": {"layer": "int", "expert": "int", "rank": "int", "token": "str",
                          "count": "int", "share": "float"},
    },
    "heads": {"heads": {"layer": "int", "head": "int", **dict.fromkeys(HEAD_SCORES, "float")}},
    "norms": {
        "norms": {"stage": "str", "layer": "int", "norm": "float"},
        "decision_depth": {"depth": "int", "count": "int"},
        "loss": {"domain": "str", "tokens": "int", "loss": "float"},
    },
}  # fmt: skip
# Columns checked where present (a survey saved before the top-token summaries lacks them).
OPTIONAL_COLUMNS = {"expert_tokens": {"error": "int"}}


def read_survey_meta(directory: Path) -> dict:
    meta_file = directory / "meta.json"
    meta = validate.json_file(meta_file)
    if not isinstance(meta, dict) or "survey" not in meta:
        raise InterpError(f"{directory} holds no survey (its meta.json is another's)")
    validate.fields(meta, meta_file, META, META_OPTIONAL)
    validate.fields(meta["cfg"], f"{meta_file} 'cfg'", CFG, {"n_experts": int})
    for key in (*CFG, "n_experts"):
        validate.integer(meta["cfg"].get(key, 1), f"{meta_file} 'cfg' {key}", low=0, high=2**24)
    return meta


def read_survey_tables(directory: Path, meta: dict) -> dict[str, pd.DataFrame]:
    import pyarrow

    tables = {}
    for path in sorted(directory.glob("*.parquet")):
        try:
            tables[path.stem] = pd.read_parquet(path)
        except (pyarrow.ArrowException, OSError, ValueError, TypeError, MemoryError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InterpError(f"{path} is corrupt or truncated: {first[:200]}") from None
    cfg = meta["cfg"]
    bounds = {"layer": cfg["n_layers"], "head": cfg["n_heads"], "depth": cfg["n_layers"] + 1,
              "expert": max(cfg.get("n_experts", 0), 1),
              "partner": max(cfg.get("n_experts", 0), 1)}  # fmt: skip
    for group in TABLES.values():
        if next(iter(group)) not in tables:
            continue
        for name, columns in group.items():
            path = directory / f"{name}.parquet"
            if name not in tables:
                raise InterpError(f"{path} is missing (its group's other tables are there)")
            if tables[name].empty:
                continue
            below = {c: b for c, b in bounds.items() if c in columns}
            optional = OPTIONAL_COLUMNS.get(name, {})
            present = {c: kind for c, kind in optional.items() if c in tables[name].columns}
            below.update(dict.fromkeys(present, 2**62))  # an error bound is never negative
            validate.table(tables[name], path, {**columns, **present}, below)
    return tables
