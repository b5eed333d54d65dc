"""Utrera et al. 2021, Fig. 5: l2 − linf and small − large eps robust sources, seed-matched.

python analysis/constraint_comparison.py --sweep quickstart [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.constraints import constraint_comparison
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(constraint_comparison, __doc__.splitlines()[0]))
