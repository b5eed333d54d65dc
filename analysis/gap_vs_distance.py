"""Terzi et al. 2021, Fig. 3: robust − natural gap per target against the source → target EMD.

python analysis/gap_vs_distance.py --sweep quickstart [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.families import gap_vs_distance
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(gap_vs_distance, __doc__.splitlines()[0]))
