"""The CLI: one `interp: error:` line and exit 2 for every mistake, found before the model loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import interp
from interp import cli
from interp.models.zoo import WEIGHTS


def run(argv, capsys):
    """(exit code, stdout, stderr) of `interp argv` run in-process."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # --help only
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    assert err.startswith("interp: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is loaded: the mistake must be found before."""

    def refuse(name, **options):
        raise AssertionError(f"loaded {name} before checking the arguments")

    monkeypatch.setattr(interp, "load", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "Hi", "-n", "0"], "-n/--max-new-tokens: the value must be >= 1"),
        (["generate", "x", "--temperature", "nan"], "--temperature: the value must be a finite"),
        (["generate", "x", "--top-p", "inf"], "--top-p: the value must be a finite number"),
        (["generate", "x", "--top-k", "-5"], "--top-k: the value must be >= 0"),
        (["coverage", "x", "--tau", "nan"], "--tau: the value must be a finite number"),
        (["report", "x", "--temperature=-inf", "-o", "r.html"], "the value must be a finite"),
        (["report", "x", "--seed", "9" * 23, "-o", "r.html"], "must be <= 18446744073709551615"),
        (["induction", "--seed", "-1"], "--seed: the value must be >= 0"),
        (["journey", "abc \udcc3\udc28 def"], "not valid UTF-8 (byte 0xC3 at character 4)"),
        (["journey", "  "], "the prompt is empty"),
        (["generate", "x", "--max-new-token", "3"], "did you mean --max-new-tokens?"),
        (["generate", "x", "--temp", "1"], "unrecognized arguments: --temp 1"),
        (["genrate", "x"], "unknown command 'genrate' (did you mean 'generate'?)"),
        (["generate"], "generate: the following arguments are required: prompt (see: interp "
                       "generate --help)"),
        (["models", "--format", "yaml"], "unknown value 'yaml'; choose from table, csv, json"),
        (["journey", "@/no/such/prompts.txt"], "cannot read prompts from /no/such/prompts.txt"),
        (["report", "x", "-o", "r\udcff.html"], "is not valid UTF-8"),
        (["report", "x", "-o", "r.txt"], "name it r.txt.html"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_before_any_model_loads(argv, message, capsys, no_model):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert message in one_error_line(err)


def test_output_path_under_a_file_is_named(tmp_path, capsys, no_model):
    (tmp_path / "file").write_text("x")
    code, _, err = run(["report", "x", "-o", str(tmp_path / "file" / "r.html")], capsys)
    assert code == 2 and f"{tmp_path / 'file'} is a file, not a directory" in one_error_line(err)


def test_model_typo_gets_a_suggestion(capsys):
    code, _, err = run(["generate", "x", "--model", "smollm2"], capsys)
    assert code == 2 and "did you mean 'smollm2-135m'?" in one_error_line(err)


def test_over_long_prompt_is_refused_before_generating(capsys):
    # tiny-moe's context is 256 tokens; 1,000 words used to run and print (exit 0).
    code, out, err = run(["generate", "word " * 1000, "--model", "tiny-moe"], capsys)
    assert code == 2 and out == "" and "context is 256 tokens" in one_error_line(err)
    code, out, err = run(["generate", "word " * 100, "--model", "tiny-moe", "-n", "250"], capsys)
    assert code == 2 and "+ 250 new tokens" in one_error_line(err)


def test_greedy_generate_matches_transformers(capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "The capital of France is"
    argv = ["generate", prompt, "--model", "tiny-moe", "-n", "6", "--format", "json"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    got = json.loads(out)
    path = WEIGHTS / "tiny-moe"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(path)(prompt, return_tensors="pt")["input_ids"]
    want = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :]
    assert got["tokens"] == want.tolist()
    assert got["sampling"] == {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}


def test_sampled_generate_is_reproducible_from_its_seed(capsys):
    argv = ["generate", "Once upon a time", "--model", "tiny-moe", "-n", "8", "--format", "json",
            "--temperature", "1.5", "--top-k", "50", "--top-p", "0.95"]  # fmt: skip
    runs = [json.loads(run([*argv, "--seed", str(s)], capsys)[1])["tokens"] for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    # The same tokens as the library's trace with the same Sampling (the report's path).
    model = interp.load("tiny-moe")
    sampling = interp.Sampling(temperature=1.5, top_k=50, top_p=0.95, seed=1)
    trace = interp.trace(model, "Once upon a time", max_new_tokens=8, sampling=sampling)
    assert trace.records[0].ids[trace.records[0].n_prompt :].tolist() == runs[0]


def test_prompts_from_a_file(tmp_path, capsys):
    text = "def add(a, b):\n    return a + b"
    (tmp_path / "one.txt").write_text(text + "\n")
    code, from_file, _ = run(["journey", f"@{tmp_path / 'one.txt'}", "--model", "tiny-moe",
                              "--format", "csv"], capsys)  # fmt: skip
    assert code == 0
    assert run(["journey", text, "--model", "tiny-moe", "--format", "csv"], capsys)[1] == from_file
    (tmp_path / "many.txt").write_text("The cat sat.\n\nThe dog ran.\n")
    argv = ["experts", f"@{tmp_path / 'many.txt'}", "--format", "json"]
    assert json.loads(run(argv, capsys)[1])["labels"] == ["p0", "p1"]
    assert run(argv, capsys)[1] == run(["experts", "The cat sat.", "The dog ran.", "--format",
                                        "json"], capsys)[1]  # fmt: skip


def test_help_imports_no_model_stack():
    code = (
        "import sys\nfrom interp import cli\n"
        "for argv in (['--help'], ['generate', '--help']):\n"
        "    try: cli.main(argv)\n    except SystemExit: pass\n"
        "cli.main(['generate', 'x', '--bad'])\n"
        "print(sorted(m for m in ('torch', 'pandas', 'transformers', 'interp.trace') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert "usage: interp [-h] COMMAND" in result.stdout and "--temperature" in result.stdout
    assert result.stderr.count("interp: error:") == 1


@pytest.mark.parametrize("blocked", ["under-a-file", "index-unwritable"])
def test_models_lists_with_an_unusable_cache(tmp_path, monkeypatch, capsys, blocked):
    if blocked == "under-a-file":
        (tmp_path / "file").write_text("x")
        monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "file" / "cache"))
    else:  # the index cannot be replaced (as root, a read-only directory would not stop us)
        (tmp_path / "cache" / "hash-index.json").mkdir(parents=True)
        monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    code, out, err = run(["models", "--format", "json"], capsys)
    assert code == 0, err
    assert {row["name"] for row in json.loads(out)} >= {"smollm2-135m", "tiny-moe", "attn-only-1l"}


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_has_help_and_one_summary(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and out.startswith(f"usage: interp {command} ")
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and cli.SUMMARY[command] in out
