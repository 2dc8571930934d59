"""benchmarks/speed.py's table on a GPU, in bfloat16: every row of issue #25, one run.

    .venv/bin/python benchmarks/gpu.py                      # on a CUDA machine (H100/H200 class)
    .venv/bin/python benchmarks/gpu.py --device cpu --quick # seconds-long smoke run, no GPU

The OLMoE-1B-7B-shaped model is built from its config with random weights, directly on the
device (no download; the trace's cost does not depend on the weights' values), all 16 layers
on a GPU. `--quick` runs 64 tokens, 8 generated, and OLMoE's shape at 2 layers of width 256.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from speed import main  # noqa: E402

if __name__ == "__main__":
    from interp.scripts import run_script

    run_script(partial(main, device="cuda", dtype="bfloat16"))
