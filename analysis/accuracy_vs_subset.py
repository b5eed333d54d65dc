"""Utrera et al. 2021, Fig. 2: accuracy and robust − natural delta vs. training-set size.

python analysis/accuracy_vs_subset.py --sweep quickstart [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.families import accuracy_vs_subset
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(accuracy_vs_subset, __doc__.splitlines()[0]))
