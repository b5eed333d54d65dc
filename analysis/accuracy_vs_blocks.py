"""Utrera et al. 2021, Fig. 4 and 11: accuracy vs. fine-tuned blocks and the block-step delta.

python analysis/accuracy_vs_blocks.py --sweep quickstart [--root DIR] [--out DIR] [--sharey]
"""

import sys

from raysweep.analysis.blocks import accuracy_vs_blocks
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(accuracy_vs_blocks, __doc__.splitlines()[0]))
