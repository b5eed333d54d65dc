"""raysweep: transfer-learning sweeps of the adversarial-robustness literature."""

__version__ = "0.1.0"
