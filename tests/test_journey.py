"""The token journey frame, its terminal table and the `interp journey` command."""

from __future__ import annotations

import argparse
import json

import pytest

from interp.analysis.journey import format_journey, journey
from interp.cli import journey as cli
from interp.errors import InterpError

FRANCE = "The capital of France is"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["journey", *argv])


@pytest.fixture(scope="module")
def france(smollm):
    import interp

    return interp.trace(smollm, FRANCE, max_new_tokens=1)


@pytest.mark.slow
def test_one_row_per_layer_then_the_boundary(smollm, france):
    frame = journey(france)
    n_layers = smollm.cfg.n_layers
    layers = frame[frame["stage"] == "layer"]
    assert list(layers["layer"]) == list(range(n_layers))
    assert list(frame["stage"]) == ["layer"] * n_layers + ["boundary"]
    assert (frame["pos"] == 4).all() and frame["token"].iloc[0] == "␣is"
    boundary = frame.iloc[-1]
    assert boundary["chosen"] == "␣Paris" and boundary["top1"] == "␣Paris"
    # The last layer's lens is the model's output, so its top guess is the chosen token.
    assert layers["top1"].iloc[-1] == "␣Paris"
    assert layers["top1_prob"].iloc[-1] == pytest.approx(boundary["chosen_prob"], abs=1e-4)
    # Every layer lists three sources, all at or before the position.
    for cell in layers["sources"]:
        keys = [int(part.split("@")[1].split()[0]) for part in cell.split(" | ")]
        assert len(keys) == 3 and max(keys) <= 4
    assert (layers["resid_norm"] > 0).all() and (layers["mlp_write"] > 0).all()
    text = format_journey(frame)
    assert "chosen: ␣Paris" in text and len(text.splitlines()) == n_layers + 5


@pytest.mark.slow
def test_earlier_position_uses_the_prompt_as_the_next_token(france):
    frame = journey(france, position=2)
    assert frame.iloc[-1]["chosen"] == "␣France"  # the text's next token, not a sample
    with pytest.raises(InterpError, match="position 6"):
        journey(france, position=6)


@pytest.mark.slow
def test_cli_prints_the_journey(smollm, monkeypatch, capsys):
    import interp

    monkeypatch.setattr(interp, "load", lambda name, **options: smollm)
    assert cli.run(parse(FRANCE)) == 0
    out = capsys.readouterr().out
    assert "token '␣is' at position 4" in out and "chosen: ␣Paris" in out
    assert cli.run(parse(FRANCE, "--format", "json", "--position", "1")) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == smollm.cfg.n_layers + 1 and rows[-1]["chosen"] == "␣of"
    with pytest.raises(InterpError, match="outside"):
        cli.run(parse(FRANCE, "--position", "99"))


def test_cli_rejects_an_empty_prompt():
    with pytest.raises(InterpError, match="empty"):
        cli.run(parse("  "))
