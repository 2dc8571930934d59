"""Train the shipped TopK SAE: smollm2-135m's residual stream before block 15, k = 32.

Where: `blocks.15.hook_resid_pre`, the middle of the 30 blocks. Early layers hold mostly the
current token's identity, late ones mostly the next-token prediction; the middle is where the
features interpretability asks about (entities, facts, the needle) sit, and the forward can stop
there, which halves the cost of collecting activations on a CPU.

Text (offline, deterministic): the project's corpus (`interp.corpus`: the standard library's
`*.py` sources, `pydoc_data.topics`, generated arithmetic; its train split) plus the long
descriptions (package READMEs) in every `*.dist-info/METADATA` of the installed site-packages,
sorted by name. Held out for the metrics: the corpus's validation split (code and prose).

Recipe (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): x' = x - b_dec,
acts = topk(relu(x' W_enc + b_enc)), recon = acts W_dec + b_dec; b_dec starts at the mean
activation (geometric-median stand-in), W_enc at W_dec^T, decoder rows kept unit norm (the
gradient's component along each row removed before the step), Adam, and the aux-k loss: the
dead latents (no firing for DEAD_AFTER tokens) reconstruct the residual error with their top
K_AUX, weighted AUX_COEF. Every position is trained, BOS included, so splicing works everywhere.

    python experiments/train_sae.py                      # the shipped dictionary
    python experiments/train_sae.py --quick --out /tmp/sae  # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sysconfig
import time
from pathlib import Path

import torch

import interp
from interp.corpus import corpus, documents
from interp.features import metrics

HOOK = "blocks.15.hook_resid_pre"
MODEL = "smollm2-135m"
SHIPPED = Path(__file__).resolve().parents[1] / "interp/features/weights/smollm2-135m-res-topk"
SEQ_LEN = 128
K_AUX, AUX_COEF, DEAD_AFTER = 256, 1 / 32, 100_000


class _Stop(Exception):
    """Raised by the capture hook: nothing after the hooked layer is needed."""


def texts() -> list[str]:
    """Training text: the corpus's train split, then installed packages' descriptions."""
    site = Path(sysconfig.get_paths()["purelib"])
    out = [text for _, text in corpus("train")]
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        body = meta.read_text(encoding="utf-8", errors="replace").partition("\n\n")[2]
        if body.strip():
            out.append(body)
    return out


def held_out() -> list[str]:
    return documents("prose", "validation") + documents("code", "validation")


def windows(tokenizer, docs: list[str], n: int, seed: int) -> torch.Tensor:
    """n BOS-prefixed windows [n SEQ_LEN] drawn at random (seeded) from the joined documents."""
    body = SEQ_LEN - 1
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    ids: list[int] = []
    for text in docs:  # tokenize only a few times what is drawn: the text is much larger
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) > 3 * n * body:
            break
    cut = torch.tensor(ids[: len(ids) // body * body]).view(-1, body)
    order = torch.randperm(len(cut), generator=torch.Generator().manual_seed(seed))[:n]
    bos = torch.full((len(order), 1), tokenizer.bos_token_id, dtype=torch.long)
    return torch.cat([bos, cut[order]], dim=1)


@torch.no_grad()
def collect(model, tokens: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """The hook's activations [windows*SEQ_LEN d_model], float32, stopping the forward there."""
    out = []

    def keep(x, hook):
        out.append(x.detach().float().reshape(-1, x.shape[-1]).clone())
        raise _Stop

    with model.hooks(fwd_hooks=[(HOOK, keep)]):
        for i in range(0, len(tokens), batch):
            try:
                model(tokens[i : i + batch])
            except _Stop:
                pass
    return torch.cat(out)


@torch.enable_grad()  # callers (a notebook, pytest) may have turned grad off
def train(acts: torch.Tensor, d_sae: int, k: int, steps: int, seed: int, batch: int = 1024,
          lr: float = 1e-3, log=print) -> tuple[dict, list]:  # fmt: skip
    """TopK SAE weights (SAELens names) trained on shuffled `acts`, and the loss curve."""
    g = torch.Generator().manual_seed(seed)
    d_in = acts.shape[1]
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    p = {"W_enc": W_dec.T.clone(), "b_enc": torch.zeros(d_sae), "W_dec": W_dec,
         "b_dec": acts.mean(0).clone()}  # fmt: skip
    for t in p.values():
        t.requires_grad_(True)
    opt = torch.optim.Adam(p.values(), lr=lr)
    since_fired = torch.zeros(d_sae)
    order = torch.randperm(len(acts), generator=g)
    var = (acts - acts.mean(0)).pow(2).sum(-1).mean()
    curve = []
    for step in range(steps):
        i = (step * batch) % len(acts)
        if i + batch > len(acts):
            order = torch.randperm(len(acts), generator=g)
            i = 0
        x = acts[order[i : i + batch]]
        pre = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
        top = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
        recon = z @ p["W_dec"] + p["b_dec"]
        err = (recon - x).pow(2).sum(-1).mean()
        since_fired += len(x)
        since_fired[(z > 0).any(0)] = 0
        dead = since_fired > DEAD_AFTER
        aux = torch.zeros(())
        if dead.any():
            masked = pre.masked_fill(~dead, 0)
            a = masked.topk(min(K_AUX, int(dead.sum())), dim=-1)
            za = torch.zeros_like(pre).scatter(-1, a.indices, a.values)
            aux = ((za @ p["W_dec"]) - (x - recon).detach()).pow(2).sum(-1).mean() / var
        loss = err / var + AUX_COEF * aux
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():  # keep the rows unit norm: drop the radial part of the gradient
            Wd = p["W_dec"]
            Wd.grad -= (Wd.grad * Wd).sum(1, keepdim=True) * Wd
        opt.step()
        with torch.no_grad():
            p["W_dec"] /= p["W_dec"].norm(dim=1, keepdim=True)
        fvu = float(err.detach() / var)
        curve.append(
            {"step": step, "fvu": fvu, "aux": float(aux.detach()), "dead": int(dead.sum())}
        )
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step}: fvu {fvu:.4f} aux {float(aux.detach()):.4f} dead {int(dead.sum())}")
    return {n: t.detach().contiguous() for n, t in p.items()}, curve


def save(weights: dict, out: Path, k: int, extra: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = weights["W_enc"].shape
    cfg = {"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": k, "hook_name": HOOK,
           "model_name": MODEL, "apply_b_dec_to_input": True, "normalize_activations": "none",
           "rescale_acts_by_decoder_norm": False, "dtype": "float32",
           "context_size": SEQ_LEN, "prepend_bos": True}  # fmt: skip
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file(weights, str(out / "sae_weights.safetensors"))
    (out / "training_log.json").write_text(json.dumps(extra, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: seconds, tiny widths")
    ap.add_argument("--out", type=Path, default=SHIPPED)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--windows", type=int, default=None, help="training windows of 128 tokens")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=16)
    args = ap.parse_args()
    n_win, steps, d_sae, n_eval = (
        (8, 20, 256, 4) if args.quick else (320, 400, args.d_sae, args.eval_windows)
    )
    n_win, steps = args.windows or n_win, args.steps or steps
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(2)
    t0 = time.time()
    model = interp.load(MODEL)
    tok = model.tokenizer
    train_tokens = windows(tok, texts(), n_win, args.seed)
    acts = collect(model, train_tokens)
    t_collect = time.time() - t0
    print(f"collected {len(acts)} activations in {t_collect:.0f}s", flush=True)
    weights, curve = train(
        acts, d_sae, args.k, steps, args.seed, batch=args.batch, log=lambda s: print(s, flush=True)
    )
    t_train = time.time() - t0 - t_collect
    del acts
    save(weights, args.out, args.k, {"seconds_collect": round(t_collect)})  # kept if eval dies
    print(f"trained in {t_train:.0f}s", flush=True)
    from interp.features.load import build
    from interp.runs.features import dictionary_metrics

    sae = build("trained", str(args.out), "topk", weights, HOOK, HOOK, {"k": args.k})
    eval_tokens = windows(tok, held_out(), n_eval, args.seed + 1)
    x = collect(model, eval_tokens)
    acts_e, recon = sae.forward(x)
    no_bos = torch.arange(len(x)) % SEQ_LEN != 0
    held = dictionary_metrics(model, sae, eval_tokens)
    held["explained_variance_no_bos"] = metrics.explained_variance(x[no_bos], recon[no_bos])
    held["fraction_dead_on_held_out"] = float((acts_e == 0).all(0).float().mean())
    log = {"model": MODEL, "hook": HOOK, "seed": args.seed, "k": args.k, "d_sae": d_sae,
           "train_tokens": n_win * SEQ_LEN, "steps": steps, "batch": args.batch,
           "seconds_collect": round(t_collect), "seconds_train": round(t_train),
           "held_out_tokens": int(held["tokens"]), "held_out": held,
           "text": "interp.corpus train split + site-packages *.dist-info/METADATA bodies",
           "fvu_curve": [c["fvu"] for c in curve[:: max(1, steps // 100)]]}  # fmt: skip
    save(weights, args.out, args.k, log)
    for name, value in held.items():
        print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
    print(f"saved {args.out} in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
