"""CCKL paper Table 2: |KL − G1|/KL against the perturbation size ε, a line per source.

python analysis/kl_g1_relerr_vs_eps.py --sweep quickstart_probes [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.cckl import kl_g1_relerr_vs_eps
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(kl_g1_relerr_vs_eps, __doc__.splitlines()[0]))
