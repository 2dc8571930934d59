"""Page size and responsiveness of the attention view on a 2,048-token prompt (smollm2-135m,
30 layers x 9 heads), side by side with the dense alternatives, in one run.

    .venv/bin/python benchmarks/views_scale.py [--quick] [--out reports/views_2048.html]

The rows are reduced while the model runs (a hook per layer keeps each row's heaviest keys),
so the 4.5 GB of float32 patterns never exist at once. Prints: the page size against a dense
uint8 lower triangle and against JSON floats (CircuitsVis-style), the attention mass the
kept keys hold, and, where chromium and chromedriver are installed, the time to open the page,
to hover a token (row, column and shading of every token) and to switch layer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import torch

import interp
from interp.report.views import data, page
from interp.report.views.encode import unpack

torch.set_grad_enabled(False)


def browser_times(path: Path, tokens: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from views_browser import Page, browser  # the browser tests' driver

    driver = browser()
    try:
        start = time.perf_counter()
        Page(driver, path, timeout=300)
        opened = time.perf_counter() - start
        hover = """
            const spans = document.querySelectorAll('.iv-tok'), times = [];
            for (const pos of arguments[0]) {
              const t0 = performance.now();
              spans[pos].dispatchEvent(new MouseEvent('mouseenter'));
              document.body.offsetHeight;  // style and layout included
              times.push(performance.now() - t0);
            }
            return times;"""
        positions = np.random.default_rng(0).integers(0, tokens, 20).tolist()
        heads = driver.execute_script(hover, positions)
        driver.execute_script("document.querySelector('button[data-heads=\"all\"]').click()")
        all_heads = driver.execute_script(hover, positions)
        switch = driver.execute_script("""
            const select = document.querySelector('.iv-view select'), t0 = performance.now();
            select.value = '15'; select.dispatchEvent(new Event('change'));
            document.body.offsetHeight;
            return performance.now() - t0;""")
        return {"open (s)": opened, "hover, one head (ms, median)": statistics.median(heads),
                "hover, all 9 heads (ms, median)": statistics.median(all_heads),
                "switch layer, all heads (ms)": switch}  # fmt: skip
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 tokens instead of 2,048")
    parser.add_argument("--out", default="reports/views_2048.html")
    args = parser.parse_args()
    n = 256 if args.quick else 2048
    model = interp.load("smollm2-135m")
    text = "\n\n".join(topics[k] for k in sorted(topics))  # English prose every Python ships
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"][0, :n]

    parts: dict[int, tuple] = {}

    def keep_rows(pattern, hook):  # [batch head query key] -> the view's rows, per layer
        parts[int(hook.name.split(".")[1])] = data.layer_rows(pattern[0])

    hooks = [(f"blocks.{layer}.attn.hook_pattern", keep_rows) for layer in range(30)]
    start = time.perf_counter()
    trace = interp.trace(model, ids, capture=(), fwd_hooks=hooks)
    rows = data.pack_rows([parts[layer] for layer in sorted(parts)])
    payload = data.attention_payload(trace, 0, rows, f"the {data.ROW_KEYS} heaviest keys per row")
    html = page.document(page.fragment("attention", [("2048 tokens", payload)], "big"), "scale")
    built = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)

    levels = unpack(rows["weights"]).astype(np.float64) / 255
    counts = unpack(rows["counts"]).astype(np.int64)
    mass = np.add.reduceat(levels, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    heads, size = 30 * 9, len(html.encode())
    dense = heads * n * (n + 1) // 2  # uint8 lower triangle, before base64
    floats = heads * n * (n + 1) // 2 * 7  # "0.0123," per weight
    print(f"{n} tokens x 30 layers x 9 heads: page {size / 2**20:.1f} MiB (built in {built:.0f} s)")
    print(f"  vs dense uint8 lower triangle {dense / 2**20:.0f} MiB ({dense / size:.0f}x larger), "
          f"vs JSON floats {floats / 2**30:.1f} GiB ({floats / size:.0f}x larger)")  # fmt: skip
    print(f"  kept keys per row: mean {counts.mean():.1f}, max {counts.max()}; "
          f"attention mass they hold: mean {mass.mean():.3f}, 1st percentile "
          f"{np.percentile(mass, 1):.3f}")  # fmt: skip
    try:
        for name, value in browser_times(out, n).items():
            print(f"  chromium: {name} {value:.1f}")
    except BaseException as exc:  # the driver helper skips (a BaseException) when absent
        print(f"  chromium: not measured ({exc})")


if __name__ == "__main__":
    main()
