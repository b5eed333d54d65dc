"""Terzi et al. 2021, Fig. 1-2: every source's inversion and effective-image grids.

python analysis/inversion_grids.py --sweep quickstart_probes [--root DIR] [--out DIR]
"""

import sys

from raysweep.analysis.images import inversion_grids
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(inversion_grids, __doc__.splitlines()[0]))
