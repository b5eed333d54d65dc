"""Terzi et al. 2021, Tables 1-3, 6-10: transfer accuracy per mode × {Rob, St, delta} and target.

python analysis/transfer_tables.py --sweep quickstart [--root DIR] [--out DIR]
"""

import sys

from raysweep.analysis.script import family_main
from raysweep.analysis.transfer_tables import transfer_tables

if __name__ == "__main__":
    sys.exit(family_main(transfer_tables, __doc__.splitlines()[0]))
