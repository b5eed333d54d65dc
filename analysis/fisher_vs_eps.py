"""Terzi et al. 2021, Fig. 4: weight-Fisher log-variance of each source against its training ε.

python analysis/fisher_vs_eps.py --sweep terzi2021_information [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.information import fisher_vs_eps
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(fisher_vs_eps, __doc__.splitlines()[0]))
