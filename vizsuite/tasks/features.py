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
from .results import DictionaryEval, FeatureComparison


def basis_from_ref(ref: dict):
    """The basis a `Basis.ref()` names, reloaded from its path; UserError if it has changed."""
    from ..errors import UserError
    from ..units import load_basis

    basis = load_basis(ref["path"], ref.get("name"))
    if ref.get("hash") and basis.hash != ref["hash"]:
        raise UserError(f"basis {ref.get('name')!r} at {ref['path']} has changed since the build was planned")
    return basis


def _paths(task):
    from ..errors import UserError
    from ..hashing import image_list_signature
    from ..images import find_images

    paths = find_images(task["images_dir"])
    if image_list_signature(paths) != task["images_signature"]:
        raise UserError(f"images in {task['images_dir']} changed since the build was planned; run it again")
    return paths


@register_task("dictionary_eval", result=DictionaryEval)
def dictionary_eval(task, ctx) -> DictionaryEval:
    """The dictionary engine's held-out evaluation (`dictionary.data.HeldOutEval`) over the folder."""
    import torch

    from ..capture import inference_copy
    from ..dictionary.data import HeldOutEval
    from ..stream import stream

    model, layer = ctx.model, task["layer"]
    basis = basis_from_ref(task["basis"])
    paths = _paths(task)
    probe = torch.rand(1, 3, model.input_size, model.input_size,
                       generator=torch.Generator().manual_seed(0)).to(model.mean.device)
    net = inference_copy(model, probe, keep=[layer], output=True)
    ev = HeldOutEval(net, layer, basis, device=model.mean.device)
    info = stream(model, paths, [ev], progress=False, desc="dictionary", fast=False)
    m = ev.result()
    return DictionaryEval(float(m["r2"]), float(m["mean_l0"]), float(m["dead_fraction"]),
                          [float(f) for f in m["frequency"]], int(m["vectors"]), info.images - info.skipped)


@register_task("feature_comparison", result=FeatureComparison)
def feature_comparison(task, ctx) -> FeatureComparison:
    """`dictionary.compare` over the folder, as a typed result."""
    from ..dictionary.compare import compare

    c = compare(ctx.model, task["layer"], _paths(task), basis_from_ref(task["basis"]), k=int(task["k"]),
                progress=False)
    return FeatureComparison(c["layer"], c["k"], c["images"], c["neuron_entropy_bits"], c["feature_entropy_bits"],
                             c["feature_indices"], c["features_per_neuron"], c["mean_neuron_entropy_bits"],
                             c["mean_feature_entropy_bits"], c["mean_features_per_neuron"], c["live_features"])
