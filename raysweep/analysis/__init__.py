"""Analysis of finished sweeps: MLflow runs -> typed frames -> statistics -> figures and reports.

- ``results``: ``sweep_runs``, ``metric_history``, ``count_unfinished``, ``cache_results``
- ``stats``: ``t_interval``, ``summarize``, ``paired_delta``, ``gap_table``
- ``tables``: Markdown rendering (``mean ± ci95 (n)``, best per row in bold)
- ``figures``: Utrera et al. 2021 Fig. 2 (accuracy and robust − natural delta vs. subset size)
- ``report``: ``write_sweep_report`` (everything above into one folder with ``report.md``)

Submodules are imported on demand so that ``import raysweep`` stays free of matplotlib.
"""
