"""Feature visualization: parametrized images, robust transforms, composable objectives, render.

    from vizsuite.zoo import load_model
    from vizsuite.optvis import render, objectives as obj

    model = load_model("efficientnet_lite0")
    result = render(model, obj.channel("blocks.4", 12), steps=256)
    result.images        # 1 x 3 x 224 x 224 in [0, 1]

Never imports vizsuite.attribution (docs/architecture.md: engines are siblings).
"""

from . import objectives, param, transforms
from .objectives import (Context, Objective, alignment, alpha_mean, as_objective, blur, channel,
                         class_logit, class_logprob, deepdream, direction, diversity, l1, l2, layer,
                         neuron, per_image, total_variation)
from .param import (IMAGENET_COLOR_SQRT, ImageParam, color_sqrt_from_folder, composite,
                    estimate_color_sqrt, fft, pixel, random_background)
from .render import RenderResult, evaluate, render
from .transforms import (Compose, Jitter, Pad, RandomRotate, RandomScale, Resize, Transform,
                         get_transforms, lucid_transforms, no_transforms, standard_transforms)

__all__ = [
    "Compose", "Context", "IMAGENET_COLOR_SQRT", "ImageParam", "Jitter", "Objective", "Pad",
    "RandomRotate", "RandomScale", "RenderResult", "Resize", "Transform", "alignment", "alpha_mean",
    "as_objective", "blur", "channel", "class_logit", "class_logprob", "color_sqrt_from_folder",
    "composite", "deepdream", "direction", "diversity", "estimate_color_sqrt", "evaluate", "fft",
    "get_transforms", "l1", "l2", "layer", "lucid_transforms", "neuron", "no_transforms", "objectives",
    "param", "per_image", "pixel", "random_background", "render", "standard_transforms",
    "total_variation", "transforms",
]
