"""interp.survey on tiny-moe against independent computations: the trace + experts analysis
on the same windows, hand-written head scores, transformers' own loss."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HANG_S

import interp
from interp.analysis import experts as ex
from interp.corpus import documents
from interp.prompts import plain_ids
from interp.survey.data import PIECE_CHARS, Corpus, _pieces, bos_token, windows
from interp.survey.layers import LENS_EVERY


@pytest.fixture(scope="module")
def moe():
    return interp.load("tiny-moe")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """Two domains, a few held-out documents each (some shorter than a window)."""
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    rows = [{"text": t[:1500], "domain": "code"} for t in documents("code", "validation")[:3]]
    rows += [{"text": t[:700], "domain": "prose"} for t in documents("prose", "validation")[:4]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


SEQ = 64


@pytest.fixture(scope="module")
def surveyed(moe, corpus_file):
    return interp.survey(moe, corpus_file, seq_len=SEQ, batch_size=4, seed=3)


def model_selection(moe, ids: torch.Tensor) -> torch.Tensor:
    """[layer, pos, k]: the experts the MoE blocks used, read from a plain hooked forward."""
    chosen = {}

    def keep(layer):
        return lambda t, hook: chosen.__setitem__(layer, t.detach().clone())

    hooks = [(f"blocks.{i}.mlp.hook_expert_indices", keep(i)) for i in range(4)]
    with moe.hooks(fwd_hooks=hooks):
        moe(ids[None])
    return torch.stack([chosen[i] for i in range(4)])


@pytest.fixture(scope="module")
def traced(moe, corpus_file):
    """interp.trace over the very windows the survey read, one prompt per window.

    The routing frame ranks experts by an argsort of the router probabilities; where the
    router ties (equal probabilities, which argsort and top-k may order apart), its
    `selected` is replaced by the experts the model really used, which is what the survey
    counts. Everywhere else the two agree (asserted)."""
    corpus = Corpus([corpus_file])
    ws = list(windows(corpus, moe.tokenizer, SEQ, bos_token(moe), None))
    trace = interp.trace(moe, [w.ids for w in ws], capture=["routing_dense", "attention"],
                         query_positions="all")  # fmt: skip
    routing = trace.routing_dense.sort_values(
        ["prompt", "layer", "pos", "expert"], ignore_index=True
    )
    real = [
        torch.zeros(4, len(w.ids), 16, dtype=torch.bool).scatter_(
            -1, model_selection(moe, w.ids), 1
        )
        for w in ws
    ]
    real = torch.cat([r.flatten() for r in real]).numpy()
    ties = routing.groupby(["prompt", "layer", "pos"])["prob"].transform(lambda p: p.nunique() < 16)
    assert (routing["selected"] == real)[~ties].all()
    return ws, trace, routing.assign(selected=real)


def test_windows_stay_inside_documents(moe, corpus_file):
    corpus = Corpus([corpus_file])
    ws = list(windows(corpus, moe.tokenizer, SEQ, bos_token(moe), None))
    starts = [w for w in ws if w.ids[0] == moe.tokenizer.bos_token_id]
    assert len(starts) == 7  # one BOS per document: no window spans two
    rebuilt = moe.tokenizer.decode(torch.cat([w.ids for w in ws[: len(ws)]]).tolist())
    assert rebuilt.replace(moe.tokenizer.bos_token, "") == "".join(
        json.loads(line)["text"] for line in corpus_file.read_text().splitlines()
    )
    assert all(len(w.ids) <= SEQ for w in ws)
    capped = list(windows(corpus, moe.tokenizer, SEQ, bos_token(moe), 100))
    assert sum(len(w.ids) for w in capped) == 100


def test_expert_load_equals_trace_analysis(surveyed, traced):
    ws, trace, routing = traced
    load = ex.expert_load(routing)
    got = surveyed.experts.merge(load, on=["layer", "expert"], suffixes=("", "_trace"))
    assert (got["count"] == got["count_trace"]).all()
    np.testing.assert_allclose(got["prob"], got["prob_trace"], rtol=1e-5)
    balance = ex.balance(routing).set_index("layer")
    mine = surveyed.expert_layers.set_index("layer")
    for col in ["tokens", "dead"]:
        assert (mine[col] == balance[col]).all()
    for col in ["balance", "entropy", "max_vio", "cv", "routing_entropy"]:
        np.testing.assert_allclose(mine[col], balance[col], rtol=1e-5)
    local = ex.temporal_locality(routing).set_index("layer")
    np.testing.assert_allclose(mine["locality"], local["overlap"], rtol=1e-9)


def test_pair_counts_equal_trace_analysis(surveyed, traced):
    ws, trace, routing = traced
    co = ex.coactivation(routing)
    got = surveyed.coactivation.merge(co, on=["layer", "expert", "partner"])
    np.testing.assert_allclose(got["rate_x"], got["rate_y"], atol=1e-12)
    # All k*(k-1) ordered pairs: off-diagonal rates of a token sum to k - 1 per token.
    off = surveyed.coactivation.query("expert != partner").groupby("layer")["count"].sum()
    assert (off == len(routing.drop_duplicates(["prompt", "pos"])) * 2 * 1).all()
    tr = ex.layer_transitions(routing)
    got = surveyed.transitions.merge(tr, on=["layer", "expert", "next_expert"], how="left")
    assert (got["count_x"] == got["count_y"].fillna(0)).all()
    domains = {p: w.domain for p, w in enumerate(ws)}
    dl = ex.domain_load(routing, domains)
    got = surveyed.domain_load.merge(dl, on=["layer", "domain", "expert"])
    assert (got["count_x"] == got["count_y"]).all()
    dd = ex.domain_divergence(routing, domains)
    np.testing.assert_allclose(surveyed.domain_divergence["js"], dd["js"], rtol=1e-9)


def test_head_scores_by_hand(surveyed, traced):
    """Loops over the full patterns of every window, written out from the definitions."""
    ws, trace, _ = traced
    n_layers, n_heads = 4, 4
    names = ["previous_token", "induction", "duplicate_token", "sink", "entropy"]
    sums = {k: np.zeros((n_layers, n_heads)) for k in names}
    counts = {k: 0 for k in sums}
    for p, w in enumerate(ws):
        pattern = trace.tensor("patterns", p).numpy()  # [layer, head, q, k]
        ids = w.ids.tolist()
        for q in range(1, len(ids)):
            sums["previous_token"] += pattern[:, :, q, q - 1]
            sums["sink"] += pattern[:, :, q, 0]
            row = pattern[:, :, q, : q + 1].astype(np.float64)
            sums["entropy"] -= (row * np.log(np.where(row > 0, row, 1))).sum(-1)
            for name in ["previous_token", "sink", "entropy"]:
                counts[name] += 1
            copies = [j for j in range(q) if ids[j] == ids[q]]
            if copies:
                sums["duplicate_token"] += pattern[:, :, q, copies].sum(-1)
                counts["duplicate_token"] += 1
            keys = [j + 1 for j in copies if j + 1 < q]
            if keys:
                sums["induction"] += pattern[:, :, q, keys].sum(-1)
                counts["induction"] += 1
    heads = surveyed.heads.sort_values(["layer", "head"])
    for name, total in sums.items():
        want = (total / counts[name]).ravel()
        np.testing.assert_allclose(heads[name].to_numpy(), want, rtol=1e-5, atol=1e-7)


def test_loss_per_domain_equals_transformers(moe, surveyed, traced):
    ws, _, _ = traced
    hf = moe.original_model
    for domain in ["code", "prose"]:
        total = n = 0.0
        for w in ws:
            if w.domain == domain and len(w.ids) > 1:
                out = hf(w.ids[None], labels=w.ids[None])
                total += float(out.loss) * (len(w.ids) - 1)
                n += len(w.ids) - 1
        row = surveyed.loss.set_index("domain").loc[domain]
        assert row["tokens"] == n
        assert row["loss"] == pytest.approx(total / n, rel=1e-5)


def test_decision_depth_equals_transformers_lens(moe, surveyed, traced):
    """The lens by hand: transformers' own final norm and lm_head on its hidden states."""
    ws, _, _ = traced
    hf, n_layers = moe.original_model, 4
    depths = []
    for w in ws:
        out = hf(w.ids[None], output_hidden_states=True)
        final = out.logits[0].argmax(-1)
        for pos in range(len(w.ids)):
            if (pos - w.index) % LENS_EVERY:
                continue
            # hidden_states[d], d < L: the stream entering layer d (the last is normed).
            top = [int(hf.lm_head(hf.model.norm(out.hidden_states[d][0, pos])).argmax())
                   for d in range(n_layers)]  # fmt: skip
            wrong = [d + 1 for d in range(n_layers) if top[d] != final[pos]]
            depths.append(max(wrong, default=0))
    want = np.bincount(depths, minlength=n_layers + 1)
    assert len(depths) >= len(ws) // 2  # about one sampled position per window of SEQ
    assert (surveyed.decision_depth["count"].to_numpy() == want).all()


def test_batched_equals_one_window_at_a_time(moe, corpus_file, surveyed, traced):
    single = interp.survey(moe, corpus_file, seq_len=SEQ, batch_size=1, seed=3)
    # One window per batch: per-batch MaxVio is each window's own, from the trace's routing.
    f = traced[2].groupby(["layer", "prompt", "expert"])["selected"].sum().unstack()
    vio = 16 * f.max(axis=1) / f.sum(axis=1) - 1.0
    got = single.expert_layers.set_index("layer")
    np.testing.assert_allclose(got["max_vio_batch"], vio.groupby("layer").mean(), rtol=1e-5)
    std = vio.groupby("layer").std(ddof=0)
    np.testing.assert_allclose(got["max_vio_batch_std"], std, rtol=1e-3, atol=1e-5)
    for name, frame in surveyed.tables.items():
        other = single.tables[name]
        if name == "expert_layers":  # per-batch MaxVio depends on the batch, by definition
            frame = frame.drop(columns=["max_vio_batch", "max_vio_batch_std"])
            other = other.drop(columns=["max_vio_batch", "max_vio_batch_std"])
        if name == "routing_entropy":
            assert_bins_move_only_at_edges(frame, other, token_entropies(traced[2]))
            continue
        pd.testing.assert_frame_equal(frame, other, check_exact=False, rtol=1e-5, atol=1e-9)


def token_entropies(routing: pd.DataFrame) -> pd.DataFrame:
    """layer, entropy: each routed token's router entropy (nats), by hand from the trace."""
    p = routing["prob"].to_numpy(np.float64)
    h = routing.assign(h=-p * np.log(np.clip(p, 1e-300, None)))
    return h.groupby(["layer", "prompt", "pos"])["h"].sum().rename("entropy").reset_index()


def assert_bins_move_only_at_edges(a: pd.DataFrame, b: pd.DataFrame, entropies, eps=1e-5):
    """Histograms of the same values computed in batches of different shapes: float rounding
    may move a value lying within `eps` of an edge into the next bin, nothing else. So at
    every edge the two cumulative counts differ by at most the values that close to it."""
    pd.testing.assert_frame_equal(a.drop(columns="count"), b.drop(columns="count"))
    for layer, rows in a.groupby("layer"):
        other = b[b["layer"] == layer]
        h = entropies.loc[entropies["layer"] == layer, "entropy"].to_numpy()
        near = np.array([(np.abs(h - edge) < eps).sum() for edge in rows["high"]])
        gap = np.abs(rows["count"].cumsum().to_numpy() - other["count"].cumsum().to_numpy())
        assert (gap <= near).all(), (layer, gap, near)
        assert rows["count"].sum() == other["count"].sum() == len(h)


def test_sums_are_mergeable(moe, corpus_file, surveyed):
    """The accumulators are plain sums: their tables depend only on the counts."""
    whole = surveyed.experts["count"].sum()
    assert whole == 2 * surveyed.meta["tokens"] * 4  # k = 2 experts per token, 4 layers
    assert surveyed.decision_depth["count"].sum() > 0
    hist = surveyed.tables["norm_histograms"]
    per_stage = hist.groupby(["stage", "layer"])["count"].sum()
    assert (per_stage == surveyed.meta["tokens"]).all()


def exact_token_counts(ws, routing) -> pd.Series:
    """(layer, expert, token_id) -> times routed there, from the trace's routing."""
    chosen = routing[routing["selected"]]
    ids = {p: w.ids.tolist() for p, w in enumerate(ws)}
    token = [ids[p][pos] for p, pos in zip(chosen["prompt"], chosen["pos"])]
    return chosen.assign(token_id=token).groupby(["layer", "expert", "token_id"]).size()


def check_top_tokens(table: pd.DataFrame, exact: pd.Series, counts: pd.DataFrame) -> int:
    """Every reported count within its bound of the exact count; every true top-10 token with
    a margin above the bound reported; the bound is (N - kept) / (m + 1). Returns how many
    reported counts fall short of the exact one (the sketch's loss)."""
    got = table.set_index(["layer", "expert", "token_id"])
    true = exact.reindex(got.index).to_numpy()
    assert (got["count"].to_numpy() <= true).all()
    assert (true - got["count"].to_numpy() <= got["error"].to_numpy()).all()
    for (layer, expert), group in exact.groupby(level=[0, 1]):
        f = group.sort_values(ascending=False, kind="stable")
        rows = table[(table.layer == layer) & (table.expert == expert)]
        N = int(counts.set_index(["layer", "expert"]).loc[(layer, expert), "count"])
        assert N == f.sum()
        error = int(rows["error"].iloc[0]) if len(rows) else 0
        eleventh = f.iloc[10] if len(f) > 10 else 0
        sure = [t for (_, _, t), c in f.iloc[:10].items() if c - error > eleventh]
        assert set(sure) <= set(rows["token_id"])
        assert (rows["count"].diff().dropna() <= 0).all()  # largest first
    return int((got["count"].to_numpy() < true).sum())


def test_top_tokens_within_their_bound_of_exact_counts(moe, corpus_file, surveyed, traced,
                                                       monkeypatch):  # fmt: skip
    """The Misra-Gries summaries against exact (layer, expert, token) counts: with as many
    counters as the vocabulary (exact), at the default size, and at 8 per expert (lossy)."""
    from interp.survey import top_tokens

    ws, _, routing = traced
    exact = exact_token_counts(ws, routing)
    check_top_tokens(surveyed.expert_tokens, exact, surveyed.experts)
    tables = {}
    for size in (2048, 8):
        monkeypatch.setattr(top_tokens, "SKETCH_SIZE", size)
        tables[size] = interp.survey(moe, corpus_file, stats=["experts"], seq_len=SEQ,
                                     batch_size=4, seed=3)  # fmt: skip
        for name in ["experts", "expert_layers", "coactivation", "transitions", "domain_load"]:
            pd.testing.assert_frame_equal(tables[size].tables[name], surveyed.tables[name])
    full = tables[2048].expert_tokens
    assert check_top_tokens(full, exact, surveyed.experts) == 0 and (full["error"] == 0).all()
    # Exact: each expert's 10 most frequent tokens, equal counts by the smaller id.
    want = (exact.reset_index(name="count").sort_values(["layer", "expert", "count", "token_id"],
            ascending=[True, True, False, True]).groupby(["layer", "expert"]).head(10))  # fmt: skip
    assert list(zip(full.token_id, full["count"])) == list(zip(want.token_id, want["count"]))
    small = tables[8].expert_tokens
    assert small.groupby(["layer", "expert"]).size().max() == 8
    assert (small["error"] > 0).mean() > 0.5  # most experts lost something...
    assert check_top_tokens(small, exact, surveyed.experts) > 0  # ...and some counts are short


def test_top_token_sketch_merges_any_split_within_the_bound():
    """A Zipf stream cut into parts (ranks, checkpoints) and merged: the merge keeps the bound
    against exact counts, and a resumed state (saved mid-stream) gives the same summaries."""
    from interp.survey import top_tokens as tt
    from interp.survey.accumulators import Accumulators

    L, E, V, m, k = 2, 6, 300, 12, 2
    g = torch.Generator().manual_seed(0)
    zipf = 1.0 / torch.arange(1, V + 1, dtype=torch.float64) ** 1.2
    batches = []
    for _ in range(12):
        ids = torch.multinomial(zipf, 200, replacement=True, generator=g)
        experts = torch.stack([(ids * (3 + i) + torch.randint(0, 2, (200,), generator=g))
                               % E for i in range(L)])  # fmt: skip
        experts = torch.stack([experts, (experts + 1) % E], -1)  # k = 2 distinct
        batches.append((ids, experts))
    exact = torch.zeros(L, E, V, dtype=torch.long)
    for ids, experts in batches:
        for i in range(L):
            exact[i].index_put_(
                (experts[i].flatten(), ids.repeat_interleave(k)),
                torch.ones(len(ids) * k, dtype=torch.long),
                accumulate=True,
            )

    def sketch(part, saved=None, save_at=None):
        acc = Accumulators()
        acc.counts("expert_count", L, E)
        top = tt.TopTokens(acc, L, E, V, size=m)
        if saved is not None:
            acc.load_state_dict(saved)
        for b, (ids, experts) in enumerate(part):
            if b == save_at:
                acc.state_dict()  # what a checkpoint reads (the buffer is folded in)
            for i in range(L):
                top.add(i, experts[i], ids)
        return acc.state_dict()

    def check(state):
        ids, counts = state["top_token_id"].long(), state["top_token_count"]
        est = torch.zeros(L, E, V, dtype=torch.long)
        est.scatter_add_(-1, ids.clamp(min=0), counts * (ids >= 0))
        bound = (exact.sum(-1) - counts.sum(-1)) // (m + 1)
        assert (est <= exact).all() and (exact - est <= bound[..., None]).all()
        assert (bound > 0).any()  # the sketch is lossy here

    check(sketch(batches))
    for parts in (2, 3, 5):
        check(tt.merge([sketch(batches[p::parts]) for p in range(parts)], V))
    # Resumed from a checkpoint at batch 5: the same summaries as the run that saved it.
    resumed = sketch(batches[5:], saved=sketch(batches[:5]))
    uninterrupted = sketch(batches, save_at=5)
    for name, t in resumed.items():
        assert torch.equal(t, uninterrupted[name]), name


def test_long_documents_tokenize_in_pieces_exactly(moe):
    """Long documents are tokenized piecewise (memory follows the piece, not the document);
    the pieces' tokens are the whole document's."""
    long = [t for t in documents("code", "validation") if len(t) > 3 * PIECE_CHARS]
    assert long
    for text in long:
        pieces = list(_pieces(text, True))
        assert len(pieces) > 1 and "".join(pieces) == text
        assert [i for p in pieces for i in plain_ids(moe.tokenizer, p)] == plain_ids(
            moe.tokenizer, text
        )


class ThreadRanks:
    """Ranks of one process, run as threads, whose gather is a barrier: the shard logic of
    `interp.survey.data` and `.shard` without torchrun."""

    def __init__(self, rank: int, world: int, slots: list, barrier):
        self.rank, self.world, self.slots, self.barrier = rank, world, slots, barrier

    def gather(self, value) -> list:
        self.slots[self.rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


def in_threads(world: int, fn) -> list:
    """fn(ranks) on `world` threads that gather through one another; the results by rank."""
    import threading

    slots, barrier, results = [None] * world, threading.Barrier(world, timeout=HANG_S), {}

    def run(rank):
        results[rank] = fn(ThreadRanks(rank, world, slots, barrier))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results.get(rank) for rank in range(world)]


@pytest.mark.parametrize("tokens", [None, 700])
def test_shards_read_their_own_records(moe, corpus_file, tmp_path, tokens, monkeypatch):
    """Records (a jsonl line, blank or not, a text file, a parquet row) go to rank i % world;
    each rank tokenizes only its own, and all ranks' windows are one process's, index for
    index, exchanged in blocks of 2 records per rank (so over several blocks)."""
    from interp.survey import shard

    monkeypatch.setattr(shard, "BLOCK", 2)
    lines = corpus_file.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    # Records 0-8: a jsonl of 7 documents, a blank line (2) and an empty text (5).
    lines[2:2], lines[5:5] = [""], ['{"text": " "}']
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    pd.DataFrame(rows[:3]).to_parquet(tmp_path / "more.parquet")  # records 10-12
    (tmp_path / "notes.txt").write_text(rows[3]["text"])  # record 9
    paths = [tmp_path / "docs.jsonl", tmp_path / "notes.txt", tmp_path / "more.parquet"]
    documents = [r for r in range(13) if r not in (2, 5)]

    def window_list(corpus):
        return [(w.index, w.domain, w.ids.tolist(), w.document)
                for w in windows(corpus, moe.tokenizer, SEQ, bos_token(moe), tokens)]  # fmt: skip

    def shard_of(ranks):
        corpus = Corpus(paths, ranks)
        records = [record for record, _, _ in corpus.records()]
        return corpus.domains, records, window_list(corpus)

    one = Corpus(paths)
    want = window_list(one)
    assert sorted({w[3] for w in want}) == (documents if tokens is None else [0, 1])
    for world in (2, 3):
        domains, read, got = zip(*in_threads(world, shard_of))
        assert list(domains) == [one.domains] * world
        assert list(read) == [[d for d in documents if d % world == r] for r in range(world)]
        assert all(w[3] % world == r for r in range(world) for w in got[r])
        assert sorted(w for part in got for w in part) == want
