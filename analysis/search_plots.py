"""Optuna's hyperparameter importances and optimisation history per search group.

python analysis/search_plots.py --sweep quickstart_search [--root DIR] [--out DIR]
"""

import sys

from raysweep.analysis.script import family_main
from raysweep.analysis.search_plots import search_plots

if __name__ == "__main__":
    sys.exit(family_main(search_plots, __doc__.splitlines()[0]))
