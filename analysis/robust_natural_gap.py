"""The robust − natural gap per cell, seed-matched, as CSV and Markdown tables.

python analysis/robust_natural_gap.py --sweep quickstart [--root DIR] [--out DIR]
"""

import sys

from raysweep.analysis.families import robust_natural_gap
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(robust_natural_gap, __doc__.splitlines()[0]))
