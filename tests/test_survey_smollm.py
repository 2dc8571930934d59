"""On smollm2-135m, the survey's induction heads on natural text are the probe's."""

from __future__ import annotations

import json

import pytest

import interp
from interp.corpus import documents
from interp.runs.induction import induction_heads

TOP = 5


@pytest.mark.slow
def test_top_induction_heads_on_text_agree_with_the_probe(smollm, tmp_path):
    data = tmp_path / "prose.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in documents("prose", "validation"))
    )
    surveyed = interp.survey(smollm, data, stats=["heads"], seq_len=256, batch_size=4,
                             tokens=3000)  # fmt: skip
    text_top = surveyed.heads.nlargest(TOP, "induction")
    probe = induction_heads(smollm, top=TOP, draws=1)["heads"]
    ours = set(zip(text_top["layer"], text_top["head"]))
    theirs = set(zip(probe["layer"], probe["head"]))
    assert len(ours & theirs) >= TOP - 1, (sorted(ours), sorted(theirs))
