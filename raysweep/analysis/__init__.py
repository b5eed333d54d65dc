"""Analysis of sweeps: MLflow runs -> typed frames -> statistics -> figures, tables, report.

- ``results``: ``sweep_runs``, ``metric_history``, ``count_unfinished``, ``cache_results``
- ``sweepdata``: ``SweepData`` (a sweep's runs, fetched once, and ``FigureOptions``) and the
  figure-family contract
- ``stats``: ``t_interval``, ``summarize``, ``paired_delta``, ``gap_table``
- ``labels``: how sources are named (``natural``, ``ℓ∞ ε=2/255``) and ordered, from the params
- ``tables``: Markdown rendering (``mean ± ci95 (n)``, best accuracy per row in bold)
- ``families``: the registry of figure families, in report order; one module per family:
  ``figures`` (Utrera Fig. 2), ``distance`` (Terzi Fig. 3), ``epochs``, ``blocks``,
  ``constraints``, ``transfer_tables``, ``information``, ``cckl``, ``images``, ``search_plots``
- ``report``: ``analyze_sweep`` (every family the data supports into one folder + ``report.md``)
- ``script``: the shared body of the thin scripts in ``analysis/``

Submodules are imported on demand so that ``import raysweep`` stays free of matplotlib.
"""
