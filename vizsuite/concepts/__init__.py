"""Concepts: linear probes, concept activation vectors and TCAV with significance
(docs/concepts.md).

An engine (rank 3): it reads units, hooks, stream, targets and capture only; the causal check
(a class logit's change when the concept direction is projected out) is composed above the
engines, in the command (`vizsuite tcav`), through `vizsuite.interventions`.
"""

from .cav import CAV, METHODS, ProbeResult, channel_direction, cosine, fit_direction, min_examples, probe, train_cav
from .data import (REPRESENTATIONS, ClassGradients, Concept, LayerVectors, class_gradients, concept_from_folder,
                   layer_vectors, random_sets, sensitivity_vectors, vectors)
from .tcav import TCAVResult, TCAVScore, run_seeds, t_test, tcav, tcav_scores

__all__ = ["CAV", "METHODS", "REPRESENTATIONS", "ClassGradients", "Concept", "LayerVectors", "ProbeResult",
           "TCAVResult", "TCAVScore", "channel_direction", "class_gradients", "concept_from_folder", "cosine",
           "fit_direction", "layer_vectors", "min_examples", "probe", "random_sets", "run_seeds", "sensitivity_vectors",
           "t_test", "tcav", "tcav_scores", "train_cav", "vectors"]
