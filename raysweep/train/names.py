"""Names of the train package that specs are validated against, torch-free.

The driver validates ``norm:`` and ``training.kind`` without torch; :mod:`raysweep.train.attacks`
and :mod:`raysweep.train.kinds` implement these names (tests check the tables agree).
"""

#: Threat-model norms: attacks, the CCKL probe and its measures implement them.
NORMS: tuple[str, ...] = ("l2", "linf")
#: How a source is trained (:func:`raysweep.train.kinds.make_training_kind`).
TRAINING_KINDS: tuple[str, ...] = ("natural", "pgd", "gaussian", "trades")
