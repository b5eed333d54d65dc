"""bench/gpu.py --tiny runs on a CPU (so the GPU bench never rots) and ends with its line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


def test_gpu_bench_tiny_prints_its_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--blocks", "0,1", "--per-gpu", "1,2",
         "--repeats", "1"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    number = r"[0-9.]+"
    assert re.fullmatch(
        rf"gpu: device=cpu arch=small_cnn size=32 images=64 raysweep_h=b0:{number},b1:{number} "
        rf"plain_h=b0:{number},b1:{number} speedup=b0:{number}x,b1:{number}x "
        rf"img_s=b0:{number},b1:{number} packed_h=1:{number},2:{number} busy=1:n/a,2:n/a",
        last,
    ), last
