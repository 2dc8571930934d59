"""The shipped tiny-deepseek checkpoint: DeepSeek-V3's class and router, balanced by the bias
update alone, beats the unigram baseline in every domain, retrains byte for byte, and works in
`interp experts` and the report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import HANG_S
from transformers import AutoModelForCausalLM, AutoTokenizer

import interp
from interp import cli
from interp.corpus import DOMAINS, held_out_windows
from interp.report import build_report

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "interp" / "models" / "weights" / "tiny-deepseek"


@pytest.fixture(scope="module")
def hf():
    m = AutoModelForCausalLM.from_pretrained(
        WEIGHTS, local_files_only=True, attn_implementation="eager", dtype=torch.float32
    )
    return m.eval()


@pytest.fixture(scope="module")
def log() -> dict:
    return json.loads((WEIGHTS / "training_log.json").read_text())


@pytest.fixture(scope="module")
def model():
    return interp.load("tiny-deepseek")


def test_checkpoint_is_small_and_complete():
    names = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert names <= {p.name for p in WEIGHTS.iterdir()}
    assert sum(p.stat().st_size for p in WEIGHTS.iterdir()) <= 20 * 2**20


def test_architecture_and_special_ids(hf):
    cfg = hf.config
    assert type(hf).__name__ == "DeepseekV3ForCausalLM"
    assert cfg.n_routed_experts >= 64 and cfg.num_experts_per_tok >= 6
    assert cfg.n_shared_experts == 1
    tok = AutoTokenizer.from_pretrained(WEIGHTS, local_files_only=True)
    assert cfg.pad_token_id == tok.pad_token_id
    assert cfg.pad_token_id not in (cfg.bos_token_id, cfg.eos_token_id)
    assert tok.bos_token_id == cfg.bos_token_id and len(tok) == cfg.vocab_size


def test_bias_moved_only_by_sign_steps(hf, log):
    """b starts at 0 and moves by -gamma, 0 or +gamma per step (sign of the load error): every
    b_i is a whole number of gammas within +-steps*gamma; and it moved (no auxiliary loss)."""
    gamma, steps = log["bias_gamma"], log["steps"]
    for layer in hf.model.layers[hf.config.first_k_dense_replace :]:
        b = layer.mlp.gate.e_score_correction_bias.double() / gamma
        assert torch.allclose(b, b.round(), atol=1e-2)
        assert b.abs().max() <= steps
        assert b.abs().max() >= 10
    assert log["aux_loss"] is None


def test_recorded_validation_beats_unigram(log):
    for domain in DOMAINS:
        assert log["val_loss"][domain] < log["unigram"][domain], domain


@pytest.mark.slow
def test_fresh_forward_reproduces_logged_validation_loss(hf, log):
    tok = AutoTokenizer.from_pretrained(WEIGHTS, local_files_only=True)
    last = log["curve"][-1]
    for domain in DOMAINS:
        x = held_out_windows(tok, domain, log["eval"]["seq_len"], log["eval"]["max_windows"])
        x = x[: log["eval_windows"]]
        logits = torch.cat([hf(input_ids=c).logits for c in x.split(8)])
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)
        )
        assert loss.item() == pytest.approx(last["val"][domain], abs=2e-3), domain
        assert loss.item() < log["unigram"][domain]


@pytest.mark.slow
def test_same_seed_same_bytes(tmp_path):
    """Two quick runs with one seed write byte-identical weights."""
    script = ROOT / "experiments" / "train_many_experts.py"
    blobs = []
    for run in ("a", "b"):
        out = tmp_path / run
        command = [sys.executable, str(script), "--quick", "--seed", "3", "--out", str(out)]
        subprocess.run(command, check=True, capture_output=True, timeout=HANG_S)
        blobs.append((out / "model.safetensors").read_bytes())
    assert blobs[0] == blobs[1]


def test_experts_per_expert_table(capsys):
    prompts = ["def add(a, b):\n    return a + b\n", "The module provides functions for files."]
    assert cli.main(["experts", *prompts, "--model", "tiny-deepseek", "--domain", "code",
                     "prose", "--per", "expert", "--format", "json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    shared = [r for r in rows if r["shared"]]
    routed = [r for r in rows if not r["shared"]]
    assert {r["expert"] for r in shared} == {64}  # numbered after the 64 routed experts
    assert {r["layer"] for r in routed} == {1, 2} and len({r["expert"] for r in routed}) == 64
    by = {(r["layer"], r["domain"]): r["count"] for r in shared}
    # The shared expert is used by every token, once.
    tokens = sum(r["count"] for r in routed if r["layer"] == 1 and r["domain"] == "all") // 8
    assert by[(1, "all")] == tokens == by[(1, "code")] + by[(1, "prose")]
    assert all(r["load"] is None for r in shared)
    assert sum(r["load"] for r in routed if r["layer"] == 2 and r["domain"] == "code") == (
        pytest.approx(1.0)
    )


def test_report_and_experts_work(model, tmp_path, capsys):
    assert cli.main(["experts", "def f(x):\n    return x", "--model", "tiny-deepseek"]) == 0
    out = capsys.readouterr().out
    assert "64 experts per layer, top-8, MoE layers [1, 2]" in out
    trace = interp.trace(model, ["def f(x):\n    return x", "The cat sat."], max_new_tokens=2)
    html = build_report(trace, tmp_path / "r.html", model=model, progress=False).read_text()
    assert "expert balance (1 = uniform)" in html
    assert "Not available for this model" not in html


@pytest.mark.slow
def test_router_families_quick(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import router_families

    out = tmp_path / "rf.png"
    table = router_families.main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert list(table.router) == ["softmax_topk", "sigmoid_group"]
    soft, sig = table.iloc[0], table.iloc[1]
    assert sig.experts == 64 and sig.shared == 1 and 0 < sig.shared_share < 1
    assert soft.shared == 0 and soft.shared_share != soft.shared_share  # NaN: none
    assert (table.max_vio_chance > 0).all() and (table.max_vio >= 0).all()
    assert "bias instead of an auxiliary loss balances at least as well" in printed


def test_routing_view_keeps_scaled_weights(model):
    from interp.report.views.data import routing
    from interp.report.views.encode import unpack

    trace = interp.trace(model, "def f(x):\n    return x", capture=("routing",))
    data = routing(trace, 0)
    experts, weights = unpack(data["experts"]), unpack(data["weights"]) / data["levels"]
    want = trace.tensor("router_weights")  # [moe_layer pos k], summing to 2.5 per token
    assert (experts == trace.tensor("router_experts").reshape(-1).numpy()).all()
    step = 1 / data["levels"]
    assert abs(weights - want.reshape(-1).numpy()).max() <= step / 2 + 1e-6
    assert want.sum(-1).allclose(torch.tensor(2.5))


def test_survey_counts_the_routers_own_choices(model, hf, tmp_path):
    """The survey's expert counts on DeepSeek-V3's sigmoid + bias + group router equal the
    top-k indices transformers' own gate returns, window by window."""
    from interp.corpus import documents
    from interp.survey.data import Corpus, bos_token, windows

    data = tmp_path / "docs.jsonl"
    rows = [
        {"text": t[:1200], "domain": d} for d in DOMAINS for t in documents(d, "validation")[:2]
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    surveyed = interp.survey(model, data, stats=["experts"], seq_len=64, batch_size=3)
    layers = [i for i, layer in enumerate(hf.model.layers) if hasattr(layer.mlp, "gate")]
    counts = torch.zeros(len(hf.model.layers), hf.config.n_routed_experts, dtype=torch.long)
    chosen = {}
    handles = [hf.model.layers[i].mlp.gate.register_forward_hook(
        lambda module, args, out, i=i: chosen.__setitem__(i, out[2])) for i in layers]  # fmt: skip
    try:
        for w in windows(Corpus([data]), model.tokenizer, 64, bos_token(model), None):
            hf(w.ids[None])
            for i in layers:
                counts[i] += torch.bincount(chosen[i].flatten(), minlength=counts.shape[1])
    finally:
        for handle in handles:
            handle.remove()
    got = surveyed.experts.pivot(index="layer", columns="expert", values="count")
    assert list(got.index) == layers
    assert (got.to_numpy() == counts[layers].numpy()).all()
    assert (counts[layers].sum(1) == surveyed.meta["tokens"] * hf.config.num_experts_per_tok).all()
