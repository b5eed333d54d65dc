"""Packing: short fine-tune jobs run in bundles, several per Tune trial, once an experiment is
large enough for the per-trial round trip to matter."""

from __future__ import annotations

import math
import os

from raysweep.plan import Job

#: An experiment of at least this many jobs runs them in bundles (see :func:`bundle_jobs`);
#: $RAYSWEEP_PACK_MIN overrides it (tests force packing).
PACK_MIN_TRIALS = 100
PACK_MIN_ENV = "RAYSWEEP_PACK_MIN"
#: At most this many jobs per bundle, and at least this many bundles per trial slot.
MAX_BUNDLE = 16
BUNDLES_PER_SLOT = 4


def bundle_jobs(chunk: list[Job], slots: int) -> list[list[Job]] | None:
    """Split an experiment's jobs into bundles that one Tune trial each runs in sequence, or
    None (one trial per job) below ``PACK_MIN_TRIALS`` jobs.

    Why: Tune and the trial round trip cost ≈0.04 s per trial on the driver's cores, a large
    share of a 0.3–1 s fine-tune (issue #7). A bundle pays it once for up to ``MAX_BUNDLE``
    jobs. Bundle count b = max(``BUNDLES_PER_SLOT`` × slots, ⌈n / MAX_BUNDLE⌉), rounded up to
    a multiple of the slots (trials running at once) and at most n; job i goes to bundle
    i mod b, so bundle sizes differ by at most one and each mixes the plan's cheap and costly
    jobs. Several bundles per slot let Tune even out uneven bundles (other load, blocks > 0);
    a multiple of the slots leaves no slot idle in the last round of equal bundles.
    """
    minimum = int(os.environ.get(PACK_MIN_ENV, PACK_MIN_TRIALS))
    if len(chunk) < max(2, minimum):
        return None
    count = max(BUNDLES_PER_SLOT * slots, math.ceil(len(chunk) / MAX_BUNDLE))
    count = min(len(chunk), math.ceil(count / slots) * slots)
    return [chunk[i::count] for i in range(count)]
