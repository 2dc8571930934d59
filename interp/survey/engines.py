"""The .jsonl routing that serving engines return, one request a line (the field names are
in interp.survey.recorded's docstring): vLLM's flat records and /v1/completions responses,
SGLang's /generate responses; routing as nested lists or base64 (raw int32, or .npy bytes).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from interp import validate
from interp.errors import InterpError
from interp.survey.recorded import Recorded, check
from interp.survey.routing_model import RoutingModel


def jsonl(path: Path, model: RoutingModel | None) -> Iterator[Recorded]:
    """With model None: requests with their domain only (for `scan`), routing unread."""
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                line = validate.utf8(raw, f"{path}:{number}")
                if line.strip():
                    row = validate.json_text(line, f"{path}:{number}")
                    yield from _requests(row, model, f"{path}:{number}")
    except OSError as exc:
        raise InterpError(f"cannot read {path}: {exc.strerror}") from None


def _requests(row, model, where: str) -> Iterator[Recorded]:
    if not isinstance(row, dict):
        raise InterpError(f"{where} is not a JSON object")
    domain = str(row.get("domain", "all"))
    if "meta_info" in row:  # SGLang
        meta = row["meta_info"] if isinstance(row["meta_info"], dict) else {}
        ids = token_ids(row.get("input_ids", []), where) + token_ids(
            row.get("output_ids", []), where
        )
        sequences = [(ids, [meta.get("routed_experts")])]
    elif "choices" in row:  # a vLLM completions response
        prompt = token_ids(row.get("prompt_token_ids"), where)
        sequences = []
        for c, choice in enumerate(row["choices"] if isinstance(row["choices"], list) else []):
            choice = choice if isinstance(choice, dict) else {}
            own = token_ids(choice.get("token_ids") or [], where)
            first = [(prompt, row.get("prompt_routed_experts"))] if c == 0 else []
            sequences.append((first, own, choice.get("routed_experts")))
        sequences = [_joined(p, own, gen, where) for p, own, gen in sequences]
    else:  # vLLM, flat
        prompt = token_ids(row.get("prompt_token_ids"), where)
        own = token_ids(row.get("token_ids") or row.get("output_token_ids") or [], where)
        sequences = [_joined([(prompt, row.get("prompt_routed_experts"))], own,
                             row.get("routed_experts"), where)]  # fmt: skip
    for ids, routing in sequences:
        if model is None:
            yield Recorded(np.zeros(0, np.int64), np.zeros((0, 0, 0), np.int16), domain)
        else:
            yield check(ids, _routing(routing, len(ids), model, where), model, where, domain)


def _joined(prompt: list, own: list, gen, where: str):
    """(ids, routing): a prompt (if any) and a completion, their routing end to end."""
    ids = [i for part, _ in prompt for i in part] + own
    return ids, [r for _, r in prompt] + ([gen] if own else [])


def token_ids(value, where: str) -> list[int]:
    if value is None:
        raise InterpError(f"{where} has no token ids (prompt_token_ids or input_ids)")
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise InterpError(f"{where}: the token ids must be a list of integers")
    return value


def _routing(parts, n_tokens: int, model: RoutingModel, where: str) -> np.ndarray:
    """The routing of one sequence, its parts (prompt, completion) joined end to end."""
    arrays = [decode(p, n_tokens, model, where) for p in parts if p is not None]
    if not arrays:
        raise InterpError(f"{where} holds no routed experts (prompt_routed_experts, "
                          "routed_experts or meta_info.routed_experts)")  # fmt: skip
    if len({a.shape[1:] for a in arrays}) > 1:
        raise InterpError(f"{where}: its prompt and completion routing differ in shape")
    return np.concatenate(arrays)


def decode(value, n_tokens: int, model: RoutingModel, where: str) -> np.ndarray:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InterpError(f"{where}: its routing is a string but not base64") from None
        if raw.startswith(b"\x93NUMPY"):
            try:
                return np.load(io.BytesIO(raw), allow_pickle=False)
            except (ValueError, EOFError, OSError) as exc:
                raise InterpError(f"{where}: its .npy routing is corrupt: {exc}") from None
        if len(raw) % 4:
            raise InterpError(f"{where}: its base64 routing is not int32 ids (truncated?)")
        flat = np.frombuffer(raw, dtype="<i4")
        k = model.top_k
        for layers in (model.n_layers, len(model.moe_layers)):
            if len(flat) % (layers * k) == 0 and len(flat) // (layers * k) in (
                n_tokens, n_tokens - 1):  # fmt: skip
                return flat.reshape(-1, layers, k)
        raise InterpError(f"{where}: {len(flat)} expert ids are not [tokens, layers, top-{k}] "
                          f"for {n_tokens} tokens of {model.name}")  # fmt: skip
    try:
        array = np.asarray(value if value != [] else np.zeros((0, 0, 0)))
    except ValueError:
        raise InterpError(f"{where}: its routing is ragged, not [tokens, layers, top_k]") from None
    if array.dtype == object:
        raise InterpError(f"{where}: its routing is ragged, not [tokens, layers, top_k]")
    return array
