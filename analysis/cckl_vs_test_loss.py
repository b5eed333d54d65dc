"""CCKL paper App. B: CCKL against the test loss, Pearson r with its 95% CI.

python analysis/cckl_vs_test_loss.py --sweep cckl2021 [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.cckl import cckl_vs_test_loss
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(cckl_vs_test_loss, __doc__.splitlines()[0]))
