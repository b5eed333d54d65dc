"""Information measures and dataset distance (Terzi et al. 2021, the CCKL paper, Utrera et al.
2021): pure functions, tensors in and numbers/arrays out, no Ray or MLflow.

Sweeps reach them through the probe table (:mod:`raysweep.probes.table`), which names each
probe, the paper it follows and the runner that calls these functions.
"""

from raysweep.measures.distance import (
    class_mean_features,
    dataset_distance,
    domain_similarity,
    emd_distance,
)
from raysweep.measures.featvis import visualize_feature
from raysweep.measures.fisher import WeightFisher, diagonal_fisher, weight_fisher_logvar
from raysweep.measures.influence import influence_matrix, top_k_label_match
from raysweep.measures.input_fisher import (
    cckl_matrix,
    cckl_pairs,
    g1_g2,
    input_fisher_stats,
    relative_error_vs_eps,
)
from raysweep.measures.inversion import (
    effective_images,
    fisher_noise_variances,
    image_grid,
    invert,
    logvar_noise_variances,
    variational_invert,
)
from raysweep.measures.tsne import plot_tsne, tsne_embedding

__all__ = [
    "WeightFisher",
    "cckl_matrix",
    "cckl_pairs",
    "class_mean_features",
    "dataset_distance",
    "diagonal_fisher",
    "domain_similarity",
    "effective_images",
    "emd_distance",
    "fisher_noise_variances",
    "g1_g2",
    "image_grid",
    "influence_matrix",
    "input_fisher_stats",
    "invert",
    "logvar_noise_variances",
    "plot_tsne",
    "relative_error_vs_eps",
    "top_k_label_match",
    "tsne_embedding",
    "variational_invert",
    "visualize_feature",
    "weight_fisher_logvar",
]
