"""Causal interventions: edits on any unit kind, exact ablation effects at scale with their
first-order estimate, and activation patching (docs/interventions.md).

Built on the one hook manager (`hooks.Hooks`): every edit here is a `hooks.Edit`, and
`intervene` is `Hooks` with edits only. Engines never import each other: this package reads
units, hooks, capture and stream only.
"""

from .edits import (MODES, UnitMeans, ablation, clamp, intervene, mean_ablate, patch_units, reference_mean,
                    reference_stats, resample_ablate, set_from, steer, zero_ablate)
from .effects import (AblationEffects, ClassEffects, LayerRunner, ablation_effects, class_effects, naive_effects,
                      spearman)
from .patching import PatchResult, PatchSweep, PositionSweep, patch, patch_positions, patch_sweep
from .targets import Target, parse_target

__all__ = ["MODES", "AblationEffects", "ClassEffects", "class_effects", "LayerRunner", "PatchResult", "PatchSweep", "PositionSweep", "Target",
           "UnitMeans", "ablation", "ablation_effects", "clamp", "intervene", "mean_ablate", "naive_effects",
           "parse_target", "patch", "patch_positions", "patch_sweep", "patch_units", "reference_mean",
           "reference_stats", "resample_ablate", "set_from", "spearman", "steer", "zero_ablate"]
