"""`Dictionary`: one sparse dictionary (an SAE or a transcoder) and its encode / decode.

The formulas are SAELens's inference ones, so a dictionary saved by SAELens encodes here as
it does there:

    x' = norm_in(x) - b_dec * apply_b_dec_to_input          (an SAE; a transcoder: norm_in(x))
    pre = x' @ W_enc + b_enc                                 [.. d_sae]
    standard:  acts = relu(pre)
    jumprelu:  acts = relu(pre) * (pre > threshold)          (BatchTopK saved with a threshold)
    topk:      the k largest of pre, relu'd; the rest 0
    batchtopk: the k * tokens largest of relu(pre) over all the tokens encoded together
    out = norm_out(acts @ W_dec + b_dec) (+ x @ W_skip.T for a skip transcoder)

`rescale_acts_by_decoder_norm` (SAELens's TopK option) multiplies pre by each decoder row's
norm and divides the acts by it again before decoding. Normalisation: `constant_norm_rescale`
scales each token to norm sqrt(d_in), `layer_norm` standardises it; both are undone on the
way out (an SAE only: a transcoder's output lives at another hook). SAELens folds the
`expected_average_only_in` factor into the weights when it saves, so it is the identity here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

ARCHITECTURES = ("standard", "jumprelu", "topk", "batchtopk")
NORMALISATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
LN_EPS = 1e-5  # SAELens's layer_norm epsilon, added to the standard deviation


@dataclass
class Dictionary:
    """Weights in float32 on the CPU until `to` moves them (the attach moves them to the
    hooked tensor's device). W_enc [d_in d_sae], W_dec [d_sae d_out], W_skip [d_out d_in]."""

    name: str
    architecture: str
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    hook_in: str
    hook_out: str
    threshold: torch.Tensor | None = None
    W_skip: torch.Tensor | None = None
    k: float | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    path: str = ""
    meta: dict = field(default_factory=dict)
    # Copies on other devices, made once: a hook moves the dictionary to every forward's device.
    _copies: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def d_out(self) -> int:
        return self.W_dec.shape[1]

    @property
    def transcoder(self) -> bool:
        return self.hook_in != self.hook_out

    @property
    def layer(self) -> int | None:
        parts = self.hook_out.split(".")
        return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" else None

    def to(self, device: torch.device | str) -> Dictionary:
        """This dictionary with every tensor on `device` (itself when already there)."""
        device = torch.device(device)
        if self.W_enc.device == device:
            return self
        if device not in self._copies:
            moved = {
                name: getattr(self, name).to(device)
                for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip")
                if getattr(self, name) is not None
            }
            self._copies[device] = Dictionary(**{**self.__dict__, **moved, "_copies": {}})
        return self._copies[device]

    def _norm_in(self, x: torch.Tensor):
        """(normalised x, the function that undoes it on an output)."""
        if self.normalize_activations == "constant_norm_rescale":
            coeff = self.d_in**0.5 / x.norm(dim=-1, keepdim=True)
            return x * coeff, lambda out: out / coeff
        if self.normalize_activations == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            centred = x - mu
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + LN_EPS), lambda out: out * std + mu
        return x, lambda out: out

    def _decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=-1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [.. d_sae] of the input-hook activations x [.. d_in], float32."""
        return self._encode(x.float())[0]

    def _encode(self, x: torch.Tensor):
        x_n, undo = self._norm_in(x)
        if self.apply_b_dec_to_input and not self.transcoder:
            x_n = x_n - self.b_dec
        pre = x_n @ self.W_enc + self.b_enc
        if self.rescale_acts_by_decoder_norm:
            pre = pre * self._decoder_norms()
        if self.architecture == "standard":
            acts = pre.relu()
        elif self.architecture == "jumprelu" or (
            self.architecture == "batchtopk" and self.threshold is not None
        ):
            acts = pre.relu() * (pre > self.threshold)
        elif self.architecture == "topk":
            top = pre.topk(int(self.k), dim=-1)
            acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        else:  # batchtopk with no threshold saved: SAELens's training-time rule
            flat = pre.relu().reshape(-1)
            keep = min(flat.numel(), int(self.k * (flat.numel() // self.d_sae)))
            top = flat.topk(keep)
            acts = torch.zeros_like(flat).scatter(0, top.indices, top.values).reshape(pre.shape)
        return acts, undo

    def decode(self, acts: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The output-hook reconstruction [.. d_out] from feature activations. `x` (the input
        activations) is needed where the dictionary normalises them or has a skip path."""
        return self._decode(acts, x, self._norm_in(x.float())[1] if x is not None else None)

    def _decode(self, acts, x, undo) -> torch.Tensor:
        if self.rescale_acts_by_decoder_norm:
            acts = acts / self._decoder_norms()
        out = acts @ self.W_dec + self.b_dec
        if not self.transcoder and self.normalize_activations in ("constant_norm_rescale",
                                                                   "layer_norm"):  # fmt: skip
            if undo is None:
                raise ValueError(f"{self.name} normalises its input: decode needs x")
            out = undo(out)
        if self.W_skip is not None:
            if x is None:
                raise ValueError(f"{self.name} has a skip path: decode needs x")
            out = out + x.float() @ self.W_skip.T
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature activations, reconstruction) of x, in float32."""
        x = x.float()
        acts, undo = self._encode(x)
        return acts, self._decode(acts, x, undo)

    def directions(self, features) -> torch.Tensor:
        """The decoder rows [n d_out] that one unit of each feature's activation writes."""
        rows = self.W_dec[list(features)]
        if self.rescale_acts_by_decoder_norm:
            rows = rows / self._decoder_norms()[list(features), None]
        return rows

    def describe(self) -> str:
        kind = "skip transcoder" if self.W_skip is not None else (
            "transcoder" if self.transcoder else "SAE")  # fmt: skip
        k = f", k={self.k:g}" if self.k is not None and self.architecture.endswith("topk") else ""
        hooks = self.hook_in if not self.transcoder else f"{self.hook_in} -> {self.hook_out}"
        return f"{self.name}: {self.architecture} {kind}, {self.d_sae} features{k}, at {hooks}"
