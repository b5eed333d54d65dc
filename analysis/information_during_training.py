"""CCKL paper Fig. 3-4: input-Fisher F-norm, CCKL and accuracy per epoch of pretraining.

python analysis/information_during_training.py --sweep cckl2021 [--root DIR] [--out DIR]
"""

import sys

from raysweep.analysis.information import information_during_training
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(information_during_training, __doc__.splitlines()[0]))
