"""Sparse dictionary features (SAEs, NMF) on a layer's activations: the `dictionary` engine
(docs/dictionary.md).

Trains on vectors from the shared streaming pass (bounded memory), writes a `units.Dictionary`
basis file, so features are units (`LAYER/NAME:K`) in every engine.
"""

from .engine import DictionaryResult, fit_basis, split_images, train_dictionary, write_dictionary
from .metrics import match, recovered, stability
from .train import ALL_METHODS, TrainConfig

__all__ = ["ALL_METHODS", "DictionaryResult", "TrainConfig", "fit_basis", "match", "recovered", "split_images",
           "stability", "train_dictionary", "write_dictionary"]
