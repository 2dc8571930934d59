"""DeepSeek-V4's memory kinds (interp.trace.memory's registry), per transformers 5.23's
DeepseekV4HCACache / DeepseekV4CSACache. n tokens seen, r = the layer's compress rate
(compress_rates[its attention kind]), hd = head_dim, id = index_head_dim:

  sliding_kv         a sliding layer: the last sliding_window - 1 tokens, K and V apart
  sliding_shared_kv  a compressed layer's sliding window: the same tokens, K = V one tensor
  compressed_kv      one entry per r tokens: floor(n / r) entries of hd, each summarising
                     positions [i r, (i + 1) r) (CSA's entry also reads the previous span)
  indexer            compressed-sparse layers: the lightning indexer's own compressed keys,
                     floor(n / r) entries of id
  compressor_state   what the compressors hold between windows: the n mod r tokens not yet
                     compressed (their kv and gate projections: 2 hd each for HCA; 2 x 2 hd
                     and 2 x 2 id for CSA's two overlapping series and its indexer), and
                     CSA's overlap of the last closed window (r x (hd + id), kv and gate)
                     once one has closed
"""

from __future__ import annotations

from interp.trace.facts import ModelFacts
from interp.trace.memory import MemoryKind, _kv_measured, _tensor_bytes, _window

CSA = "compressed_sparse_attention"


def _rate(facts: ModelFacts, sub: str) -> int:
    return facts.memory_shapes["compress_rates"][sub]


def _dict_bytes(*names: str, keys: tuple[str, ...] = ("compressor", "indexer")):
    def measure(layer) -> int:
        return sum(
            _tensor_bytes(*(getattr(layer, name, {}).get(key) for key in keys)) for name in names
        )

    return measure


def _compressed(facts, n, sub):
    return n // _rate(facts, sub)


def _compressed_width(facts, sub):
    return facts.memory_shapes["head_dim"] * facts.dtype_bytes


def _indexer_width(facts, sub):
    return facts.memory_shapes["index_head_dim"] * facts.dtype_bytes


def _pending(facts, n, sub):
    """Tokens held in the compressors' buffers, plus CSA's overlap slots once a window closed."""
    r = _rate(facts, sub)
    overlap = r if sub == CSA and n >= r else 0
    return n % r + overlap


def _state_bytes(facts: ModelFacts, n: int, sub: str) -> int:
    m, r = facts.memory_shapes, _rate(facts, sub)
    hd, idx = m["head_dim"], m["index_head_dim"]
    if sub != CSA:  # HCA: kv and gate of hd per buffered token
        return (n % r) * 2 * hd * facts.dtype_bytes
    buffered = (n % r) * 2 * (2 * hd + 2 * idx)
    overlap = r * 2 * (hd + idx) if n >= r else 0
    return (buffered + overlap) * facts.dtype_bytes


KINDS_V4 = {
    "sliding_shared_kv": MemoryKind(
        _window,
        _window,
        lambda f: f.n_key_value_heads * f.d_head * f.dtype_bytes,
        _kv_measured,
        grows_with_heads=True,
    ),
    "compressed_kv": MemoryKind(
        _compressed,
        lambda f, n, sub: _compressed(f, n, sub) * _rate(f, sub),
        _compressed_width,
        _dict_bytes("compressed_kv", keys=("compressor",)),
        by_layer_kind=True,
    ),
    "indexer": MemoryKind(
        _compressed,
        lambda f, n, sub: _compressed(f, n, sub) * _rate(f, sub),
        _indexer_width,
        _dict_bytes("compressed_kv", keys=("indexer",)),
        by_layer_kind=True,
    ),
    # Token slots of mixed widths: bytes from _state_bytes, not entries x a width.
    "compressor_state": MemoryKind(
        _pending,
        lambda f, n, sub: n % _rate(f, sub),
        None,
        _dict_bytes("buffer_kv", "buffer_gate", "overlap_kv", "overlap_gate"),
        by_layer_kind=True,
        total_bytes=_state_bytes,
    ),
}

HELD_BY_V4 = {
    "compressed_sparse_attention": (
        "sliding_shared_kv", "compressed_kv", "indexer", "compressor_state",
    ),
    "heavily_compressed_attention": ("sliding_shared_kv", "compressed_kv", "compressor_state"),
}  # fmt: skip
