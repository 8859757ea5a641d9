"""Task kinds for dictionary features in galleries (docs/units.md: features are units).

- `dictionary_eval`: a basis over the gallery's images: R², L0, dead fraction and each
  feature's frequency (the feature layer page sorts by it);
- `feature_comparison`: neurons vs features of one layer on the same images (the comparison
  page): selectivity of top examples and how many features a neuron splits into.

Both name their basis by its JSON reference (`Basis.ref()`: path and content hash), so a
changed basis file is a different task, and a worker reloads it by path.
"""

from __future__ import annotations

from .core import register_task
from .examples import planned_images
from .results import DictionaryEval, FeatureComparison


def _basis(task):
    from ..units import basis_from_ref

    return basis_from_ref(task["basis"], since="the build was planned", needed_by="the build")


@register_task("dictionary_eval", result=DictionaryEval)
def dictionary_eval(task, ctx) -> DictionaryEval:
    """The dictionary engine's held-out evaluation (`dictionary.engine.evaluate_basis`) over the folder."""
    from ..dictionary.engine import evaluate_basis

    m, info = evaluate_basis(ctx.model, task["layer"], _basis(task), planned_images(task), desc="dictionary")
    return DictionaryEval(float(m["r2"]), float(m["mean_l0"]), float(m["dead_fraction"]),
                          [float(f) for f in m["frequency"]], int(m["vectors"]), info.images - info.skipped)


@register_task("feature_comparison", result=FeatureComparison)
def feature_comparison(task, ctx) -> FeatureComparison:
    """`dictionary.compare` over the folder, as a typed result."""
    from ..dictionary.compare import compare

    c = compare(ctx.model, task["layer"], planned_images(task), _basis(task), k=int(task["k"]),
                progress=False)
    return FeatureComparison(c["layer"], c["k"], c["images"], c["neuron_entropy_bits"], c["feature_entropy_bits"],
                             c["feature_indices"], c["features_per_neuron"], c["mean_neuron_entropy_bits"],
                             c["mean_feature_entropy_bits"], c["mean_features_per_neuron"], c["live_features"])
