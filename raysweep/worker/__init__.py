"""What runs inside Ray workers (torch lives here); never imports :mod:`raysweep.driver`.

Entry points, each a plain function Ray calls on a worker (the driver names them by import
path in :mod:`raysweep.driver.entrypoints`, so it never imports this package):

- :func:`raysweep.worker.sources.pretrain_task`: train or import one source into the store
- :func:`raysweep.worker.probe.probe_task`: one probe of one source
- :func:`raysweep.worker.finetune.finetune_trainable`: a fine-tune trial (one job or a bundle)
- :func:`raysweep.worker.search.search_trainable`: a search trial on a validation split

Beside them: :mod:`~raysweep.worker.inputs` (cached sources, typed configs),
:mod:`~raysweep.worker.trial_state` (a trial's resumable state),
:mod:`~raysweep.worker.features` (the frozen-feature cache). Workers never write to MLflow:
they return or report plain dicts (keys in :mod:`raysweep.protocol`) and the driver records.
"""
