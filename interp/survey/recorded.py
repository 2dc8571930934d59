"""Recorded routing: per request, its token ids and the expert ids its MoE layers chose, as
serving engines return them, checked against the model's config before anything is counted.

Each request becomes one `Recorded`: ids [n] and experts [n, MoE layers, top_k], in the
layout of vLLM's routed-experts replay (`--enable-return-routed-experts`: int16 expert ids,
`prompt_routed_experts` [prompt_len, MoE layers, top_k] on the response, `routed_experts`
[gen_len, ...] per choice; docs/training/routed_experts_replay.md). Files:

  .jsonl    one request a line, any of
            - vLLM, flat (a RequestOutput dumped): prompt_token_ids, prompt_routed_experts,
              and optionally token_ids (or output_token_ids) with routed_experts
            - vLLM, a /v1/completions response: prompt_token_ids and prompt_routed_experts on
              the response, token_ids and routed_experts per choice (each choice after the
              first counts as its own sequence, the prompt once)
            - SGLang /generate (return_routed_experts, PR #12162): input_ids and output_ids,
              meta_info.routed_experts: base64 of int32 ids, flat, [seqlen - 1, num_hidden_
              layers, top_k] (every layer, dense ones included: only the MoE ones are read)
            routing as nested lists, or base64 (raw int32 as SGLang sends it, or .npy bytes);
            an optional "domain" label per line
  .npz      bulk shards: token_ids [T], routed_experts [T, MoE layers, top_k] int16,
            offsets [requests + 1] (request r is rows offsets[r]:offsets[r + 1]), optional
            domains [requests] (strings)
  .parquet  one request a row: prompt_token_ids (list of ints), prompt_routed_experts
            (bytes: int16 [n, MoE layers, top_k], little-endian; or nested lists), domain

The routing may hold one row fewer than the tokens (the last generated token is never fed
back). A token whose ids are all -1 (vLLM's mark of a prefix-cache hit it holds no routing
for) is left out of every count.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interp.errors import InterpError
from interp.survey.routing_model import RoutingModel

SUFFIXES = (".jsonl", ".npz", ".parquet")
UNRECORDED = -1


@dataclass
class Recorded:
    ids: np.ndarray  # [n] int64
    experts: np.ndarray  # [n, MoE layers, top_k] int16; rows of -1: not recorded
    domain: str


def files(paths) -> list[Path]:
    """The shards: files as given, directories expanded to their shards in name order."""
    out = []
    for raw in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise InterpError(f"{path} holds no routing shards ({', '.join(SUFFIXES)})")
            out += found
        elif not path.exists():
            raise InterpError(f"{path} does not exist")
        elif path.suffix not in SUFFIXES:
            raise InterpError(f"{path}: recorded routing is read from {', '.join(SUFFIXES)}")
        else:
            out.append(path)
    if not out:
        raise InterpError("no routing files given")
    return out


def scan(path: Path) -> tuple[int, list[str]]:
    """A shard's number of requests and its domains in order of appearance, read without
    its routing where the format allows (npz members, parquet columns)."""
    if path.suffix == ".npz":
        with _npz(path) as shard:
            n = len(_member(shard, "offsets", path)) - 1
            labels = (
                _member(shard, "domains", path).tolist()
                if "domains" in shard.files
                else ["all"] * n
            )
    elif path.suffix == ".parquet":
        table = _parquet(path).read(columns=_domain_column(path))
        n = table.num_rows
        labels = table.column("domain").to_pylist() if table.num_columns else ["all"] * n
    else:
        from interp.survey.engines import jsonl

        labels = [r.domain for r in jsonl(path, None)]
        n = len(labels)
    return n, list(dict.fromkeys(str(d) for d in labels))


def read(path: Path, model: RoutingModel) -> Iterator[Recorded]:
    """The requests of one shard, each checked against the model."""
    if path.suffix == ".npz":
        yield from _read_npz(path, model)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path, model)
    else:
        from interp.survey.engines import jsonl

        yield from jsonl(path, model)


def check(ids, experts, model: RoutingModel, where: str, domain="all") -> Recorded:
    """One request's ids and experts as the model allows them; one line naming what is
    wrong otherwise."""
    ids = np.asarray(ids)
    experts = np.asarray(experts)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) and ids.size:
        raise InterpError(f"{where}: the token ids must be a list of integers")
    if experts.ndim != 3 or not np.issubdtype(experts.dtype, np.integer) and experts.size:
        raise InterpError(f"{where}: the routing must be integers shaped [tokens, layers, "
                          f"top_k], not {list(experts.shape)}")  # fmt: skip
    n_moe = len(model.moe_layers)
    if experts.shape[1] == model.n_layers and n_moe != model.n_layers:
        experts = experts[:, model.moe_layers]  # SGLang: every layer, dense ones included
    elif experts.shape[1] != n_moe:
        raise InterpError(f"{where}: the routing has {experts.shape[1]} layers; {model.name} "
                          f"has {n_moe} MoE layers (of {model.n_layers})")  # fmt: skip
    if experts.shape[2] != model.top_k:
        raise InterpError(f"{where}: the routing is top-{experts.shape[2]}; {model.name} "
                          f"routes each token to {model.top_k} experts")  # fmt: skip
    if len(experts) not in (len(ids), len(ids) - 1):
        raise InterpError(f"{where}: {len(ids)} tokens but routing for {len(experts)}")
    ids = ids[: len(experts)].astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= model.d_vocab):
        bad = int(ids.max() if ids.max() >= model.d_vocab else ids.min())
        raise InterpError(f"{where}: token id {bad} lies outside the vocabulary "
                          f"[0, {model.d_vocab})")  # fmt: skip
    check_experts(experts, model, where)
    return Recorded(ids, experts.astype(np.int16, copy=False), str(domain))


def check_experts(experts: np.ndarray, model: RoutingModel, where: str) -> None:
    """Ids in [0, n_experts) (or a whole token of -1), k distinct experts per token."""
    if not experts.size:
        return
    low, high = int(experts.min()), int(experts.max())
    if low < UNRECORDED or high >= model.n_experts:
        bad = high if high >= model.n_experts else low
        raise InterpError(f"{where}: expert id {bad} lies outside [0, {model.n_experts}) "
                          f"({model.name} has {model.n_experts} routed experts)")  # fmt: skip
    if low == UNRECORDED:
        missing = experts == UNRECORDED
        if not (missing.all((1, 2)) | ~missing.any((1, 2))).all():
            raise InterpError(f"{where}: a token has routing for some layers and -1 for others")
    ranked = np.sort(experts.reshape(-1, experts.shape[-1]), axis=-1)
    twice = (ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] != UNRECORDED)
    if twice.any():
        raise InterpError(f"{where}: a token chose expert {int(ranked[:, 1:][twice][0])} twice "
                          "in one layer (a router's top-k are distinct)")  # fmt: skip


# -- bulk shards: npz and parquet ----------------------------------------------------------


class _npz:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self.shard = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise InterpError(f"{self.path} is corrupt or truncated: {exc}") from None
        if not hasattr(self.shard, "files"):
            raise InterpError(f"{self.path} is a single array, not a routing shard")
        return self.shard

    def __exit__(self, *exc):
        self.shard.close()


def _member(shard, name: str, path: Path) -> np.ndarray:
    if name not in shard.files:
        raise InterpError(f"{path} has no '{name}' array")
    try:
        return shard[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InterpError(f"{path} is corrupt or truncated ({name}): {exc}") from None


def _read_npz(path: Path, model: RoutingModel) -> Iterator[Recorded]:
    with _npz(path) as shard:
        ids = _member(shard, "token_ids", path)
        experts = _member(shard, "routed_experts", path)
        offsets = _member(shard, "offsets", path)
        n = len(offsets) - 1
        domains = (
            _member(shard, "domains", path).tolist() if "domains" in shard.files else ["all"] * n
        )
    if (
        offsets.ndim != 1
        or n < 0
        or not np.issubdtype(offsets.dtype, np.integer)
        or (n >= 0 and (offsets[0] != 0 or offsets[-1] != len(ids)))
        or (np.diff(offsets) < 0).any()
        or len(experts) != len(ids)
        or len(domains) != n
    ):
        raise InterpError(f"{path}: offsets, token_ids, routed_experts and domains disagree "
                          "(offsets must run from 0 to the number of tokens)")  # fmt: skip
    # The whole shard checked at once (one pass), then cut into its requests.
    shard = check(ids, experts, model, str(path))
    for r in range(n):
        a, b = int(offsets[r]), int(offsets[r + 1])
        yield Recorded(shard.ids[a:b], shard.experts[a:b], str(domains[r]))


def _parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InterpError(f"cannot read {path} as parquet: {exc}") from None


def _domain_column(path: Path) -> list[str]:
    return ["domain"] if "domain" in _parquet(path).schema_arrow.names else []


def _read_parquet(path: Path, model: RoutingModel) -> Iterator[Recorded]:
    import pyarrow as pa

    from interp.survey.engines import decode, token_ids

    reader = _parquet(path)
    names = reader.schema_arrow.names
    for column in ("prompt_token_ids", "prompt_routed_experts"):
        if column not in names:
            raise InterpError(f"{path} has no '{column}' column")
    columns = ["prompt_token_ids", "prompt_routed_experts", *_domain_column(path)]
    shape = (len(model.moe_layers), model.top_k)
    row = 0
    try:
        for batch in reader.iter_batches(columns=columns):
            for record in batch.to_pylist():
                row += 1
                where = f"{path} row {row}"
                ids, routing = record["prompt_token_ids"], record["prompt_routed_experts"]
                if isinstance(routing, bytes):
                    if len(routing) % (2 * shape[0] * shape[1]):
                        raise InterpError(f"{where}: its routing bytes are not int16 "
                                          f"[tokens, {shape[0]}, {shape[1]}]")  # fmt: skip
                    routing = np.frombuffer(routing, dtype="<i2").reshape(-1, *shape)
                else:
                    routing = decode(routing, len(ids or []), model, where)
                ids = token_ids(ids, where)
                yield check(ids, routing, model, where, record.get("domain", "all"))
    except (pa.ArrowException, OSError) as exc:
        raise InterpError(f"cannot read {path} as parquet: {exc}") from None
