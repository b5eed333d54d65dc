"""Terzi et al. 2021, Fig. 6: every source's t-SNE of features, coloured by class.

python analysis/tsne_embeddings.py --sweep quickstart_probes [--root DIR] [--out DIR]
"""

import sys

from raysweep.analysis.images import tsne_embeddings
from raysweep.analysis.script import family_main

if __name__ == "__main__":
    sys.exit(family_main(tsne_embeddings, __doc__.splitlines()[0]))
