"""Activation atlases and per-image building blocks (Carter et al. 2019; Olah et al. 2018).

    from vizsuite.atlas import AtlasConfig, build_atlas
    build_atlas(model, "blocks.4", find_images("photos"), Path("out/atlas"), AtlasConfig(grid=20))

Page writing (`pages`) imports no torch; everything else sits above optvis and tasks.
"""

from .build import AtlasConfig, build_atlas
from .explain import ExplainConfig, build_explain, building_blocks
from .icons import IconRecipe

__all__ = ["AtlasConfig", "ExplainConfig", "IconRecipe", "build_atlas", "build_explain", "building_blocks"]
