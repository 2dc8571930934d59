"""A corpus of hostile files, built by the tests: each is a file or directory a user might be
handed (or make by a typo) that is not what it claims. Every builder takes a good original and
a destination, and writes one damaged copy; the tests and the fuzzing share them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit in json.loads
HUGE_INT = "9" * 5000  # past the 4,300-digit limit of int("...")
NOT_UTF8 = b"caf\xc3\xa9 ok, then \xff\xfe garbage"  # 0xFF at byte offset 15


def _copy(good: Path, out: Path) -> Path:
    shutil.copytree(good, out)
    return out


def _edit_meta(out: Path, edit) -> Path:
    meta = json.loads((out / "meta.json").read_text())
    edit(meta)
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def _edit_frame(out: Path, name: str, edit) -> Path:
    path = out / f"{name}.parquet"
    edit(pd.read_parquet(path)).to_parquet(path, index=False)
    return out


def _set(mapping: dict, key: str, value) -> None:
    mapping[key] = value


# -- a saved run (`interp report --save DIR`, `Trace.save`) --------------------------------
SAVED_RUN = {
    "deep meta": lambda out: (out / "meta.json").write_text('{"model": ' + DEEP + "}"),
    "meta is a list": lambda out: (out / "meta.json").write_text("[1, 2]"),
    "list for an object": lambda out: _edit_meta(out, lambda m: _set(m, "empty_frames", [1])),
    "string for a number": lambda out: _edit_meta(
        out, lambda m: _set(m["sampling"], "temperature", "0.0")
    ),
    "string for a size": lambda out: _edit_meta(out, lambda m: _set(m["cfg"], "n_layers", "4")),
    "huge int in meta": lambda out: (out / "meta.json").write_text('{"model": ' + HUGE_INT + "}"),
    "meta not UTF-8": lambda out: (out / "meta.json").write_bytes(b'{"model": "' + NOT_UTF8),
    "short token table": lambda out: _edit_frame(out, "tokens", lambda f: f.iloc[1:]),
    "float token ids": lambda out: _edit_frame(
        out, "tokens", lambda f: f.assign(token_id=f["token_id"] + 0.5)
    ),
    "text token ids": lambda out: _edit_frame(
        out, "tokens", lambda f: f.assign(token_id=f["token_id"].astype(str))
    ),
    "huge prompt": lambda out: _edit_frame(
        out, "tokens", lambda f: f.assign(prompt=f["prompt"] + 10**12)
    ),
    "huge position": lambda out: _edit_frame(
        out, "tokens", lambda f: f.assign(pos=f["pos"] * 10**12)
    ),
    "huge layer": lambda out: _edit_frame(
        out, "residual", lambda f: f.assign(layer=f["layer"] + 10**12)
    ),
    "huge text": lambda out: _edit_meta(out, lambda m: _set(m, "texts", [["x" * 2**25, ""]])),
    "corrupt frame": lambda out: (out / "residual.parquet").write_bytes(b"PAR1 not a table"),
    "no tokens": lambda out: (out / "tokens.parquet").unlink(),
}


# -- a saved survey (`interp survey --out DIR`) --------------------------------------------
def _edit_survey_meta(out: Path, edit) -> Path:
    return _edit_meta(out, edit)


SURVEY = {
    "bad JSON": lambda out: (out / "meta.json").write_text('{"survey": 1,'),
    "deep meta": lambda out: (out / "meta.json").write_text('{"survey": ' + DEEP + "}"),
    "no domains": lambda out: _edit_survey_meta(out, lambda m: m.pop("domains")),
    "wrong-typed tokens": lambda out: _edit_survey_meta(out, lambda m: _set(m, "tokens", "many")),
    "domains not a list": lambda out: _edit_survey_meta(out, lambda m: _set(m, "domains", 3)),
    "corrupt parquet": lambda out: (out / "experts.parquet").write_bytes(b"PAR1\x00\x01 nope"),
    "missing column": lambda out: _edit_frame(out, "norms", lambda f: f.drop(columns="norm")),
    "text for a count": lambda out: _edit_frame(
        out, "decision_depth", lambda f: f.assign(count=f["count"].astype(str))
    ),
    "non-UTF-8 meta": lambda out: (out / "meta.json").write_bytes(b'{"survey": "' + NOT_UTF8),
    "missing table": lambda out: (out / "expert_layers.parquet").unlink(),
}


def build(cases: dict, good: Path, root: Path) -> dict[str, Path]:
    """One damaged copy of `good` per case, under `root`."""
    made = {}
    for index, (name, damage) in enumerate(cases.items()):
        out = _copy(good, root / f"case{index}")
        damage(out)
        made[name] = out
    return made


# -- corpora for `interp survey --data` ----------------------------------------------------
def corpus_files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "binary file": ("blob.bin", bytes(range(256)) * 4),
        "non-UTF-8 text": ("notes.txt", NOT_UTF8),
        "non-UTF-8 jsonl": ("rows.jsonl", b'{"text": "ok"}\n{"text": "' + NOT_UTF8 + b'"}\n'),
        "huge integer": ("big.jsonl", b'{"text": "a", "domain": ' + HUGE_INT.encode() + b"}\n"),
        "deep jsonl": ("deep.jsonl", b'{"text": "a", "domain": ' + DEEP.encode() + b"}\n"),
        "corrupt parquet": ("bad.parquet", b"PAR1 garbage"),
    }
    made = {}
    for name, (file, data) in files.items():
        (root / file).write_bytes(data)
        made[name] = root / file
    fake = root / "not-a-dataset"
    fake.mkdir()
    (fake / "dataset_info.json").write_text("{}")
    made["directory that is no datasets save"] = fake
    plain = root / "plain-dir"
    plain.mkdir()
    (plain / "a.txt").write_text("text")
    made["plain directory"] = plain
    return made


# -- model directories (a copy of an embedded checkpoint, then one thing wrong) -------------
def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _pickled_weights(out: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
    (out / "model.safetensors").unlink()


LOOPING_TEMPLATE = "{% for i in range(10**12) %}x{% endfor %}"
ESCAPING_TEMPLATE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
MODEL_DIR = {
    "more experts per token than experts": lambda out: _edit_json(
        out / "config.json", lambda c: _set(c, "num_experts_per_tok", c["num_experts"] + 1)
    ),
    "chat template loops": lambda out: _edit_json(
        out / "tokenizer_config.json", lambda c: _set(c, "chat_template", LOOPING_TEMPLATE)
    ),
    "chat template escapes": lambda out: _edit_json(
        out / "tokenizer_config.json", lambda c: _set(c, "chat_template", ESCAPING_TEMPLATE)
    ),
    "pickled weights": _pickled_weights,
    "beyond the machine's memory": lambda out: _edit_json(
        out / "config.json",
        lambda c: c.update(
            hidden_size=65536,
            intermediate_size=262144,
            num_attention_heads=64,
            num_key_value_heads=64,
        ),  # fmt: skip
    ),
    "more layers than the weights": lambda out: _edit_json(
        out / "config.json", lambda c: _set(c, "num_hidden_layers", 300)
    ),
    "deep config": lambda out: (out / "config.json").write_text('{"a": ' + DEEP + "}"),
    "config not UTF-8": lambda out: (out / "config.json").write_bytes(b'{"a": "' + NOT_UTF8),
}
