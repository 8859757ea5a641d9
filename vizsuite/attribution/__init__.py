"""Attribution: which input pixels (or hidden units) explain a prediction.

    from vizsuite.attribution import attribute
    res = attribute(model, images, target="top1", method="lrp", composite="epsilon_gamma_box")
    res.attribution      # rows x C x H x W, rows = (image, target) pairs
    res.check.value      # LRP relevance conservation / IG completeness delta

Methods wrap captum (saliency, gradient x input, integrated gradients, Grad-CAM) and zennit (LRP
composites, with our canonizers for real architectures); SmoothGrad wraps any of them.
Never imports vizsuite.optvis.
"""

from .methods import (DEFAULT_IG_STEPS, METHODS, Attribution, Check, attribute, make_baseline,
                      resolve_method)
from .targets import Target, TargetSpec, parse_target

__all__ = ["Attribution", "Check", "DEFAULT_IG_STEPS", "METHODS", "Target", "TargetSpec", "attribute",
           "make_baseline", "parse_target", "resolve_method"]
