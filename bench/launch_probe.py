"""bench (c): `raysweep launch` in this process, timing its fine-tune stage and its peak RSS.

    python bench/launch_probe.py OUT.json -- <raysweep CLI arguments>

The product code runs unchanged; this wrapper only wraps the launcher's fine-tune stage
(``raysweep.driver.launcher.run_finetune_stage``) with a clock and reads the driver's own
peak resident memory (``getrusage``) at the end.
Writes {"total_s", "finetune_s", "driver_peak_mib", "exit", "error"}; an exception after the
fine-tune stage (e.g. in the report) is recorded, not fatal to the figures.
"""

from __future__ import annotations

import functools
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    out, separator, *cli_args = argv
    assert separator == "--", "usage: launch_probe.py OUT.json -- <raysweep args>"
    from raysweep.cli import main as raysweep_main
    from raysweep.driver import launcher

    timing: dict[str, float] = {}
    stage = launcher.run_finetune_stage

    @functools.wraps(stage)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return stage(*args, **kwargs)
        finally:
            timing["finetune_s"] = time.perf_counter() - started

    launcher.run_finetune_stage = timed
    started = time.perf_counter()
    code, error = 1, ""
    try:
        code = raysweep_main(cli_args)
    except Exception as exc:  # the figures of a finished fine-tune stage are still valid
        error = f"{type(exc).__name__}: {exc}"
    result = {
        "exit": code,
        "error": error,
        "total_s": time.perf_counter() - started,
        "finetune_s": timing.get("finetune_s"),
        "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(out).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
