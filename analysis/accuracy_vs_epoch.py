"""Utrera et al. 2021, Fig. 3: accuracy and robust − natural delta vs. fine-tuning epoch.

python analysis/accuracy_vs_epoch.py --sweep quickstart [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.epochs import accuracy_vs_epoch
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(accuracy_vs_epoch, __doc__.splitlines()[0]))
