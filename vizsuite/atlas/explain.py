"""Building blocks of one image (Olah et al. 2018): which positions of a layer support the
prediction (gradient x activation, summed over channels) and, per position, its strongest
units shown as feature visualizations (a semantic dictionary)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..hooks import Hooks
from ..errors import UserError
from ..analysis.samples import check_spatial, position_attribution
from .icons import IconRecipe, render_unit_icons


@dataclass
class ExplainConfig:
    units: int = 3                # strongest units shown per position
    class_label: Optional[str] = None  # default: the top prediction
    top: int = 5                  # predictions listed
    seed: int = 0
    icon: IconRecipe = field(default_factory=lambda: IconRecipe(size=128, steps=128))  # = the gallery default: shared renders
    icon_batch: int = 16
    image_px: int = 448           # display size of the image on the page
    progress: bool = True
    cache: Optional[Path] = None  # task cache (default SITE/.cache/tasks); point it at a gallery's to reuse

    def validate(self) -> None:
        if self.units < 1:
            raise UserError(f"--units must be at least 1, got {self.units}")
        if self.top < 1:
            raise UserError(f"--top must be at least 1, got {self.top}")
        if self.icon.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.icon.steps}")
        if self.icon.size < 16:
            raise UserError(f"--icon-size must be at least 16, got {self.icon.size}")


@dataclass
class Blocks:
    """The numbers behind the page (also what tests check)."""

    image: torch.Tensor          # 3 x S x S in [0, 1], as the model saw it
    probs: torch.Tensor          # classes
    target: int
    acts: torch.Tensor           # C x H x W
    attribution: torch.Tensor    # H x W: gradient x activation summed over channels


def building_blocks(model, image_path: Path, layer: str, class_index: Optional[int] = None) -> Blocks:
    """Forward + one backward: the layer's activations and their attribution to the target."""
    from ..images import load_batch

    x = load_batch([image_path], model.input_size, model.spec.crop_pct).to(model.mean.device)
    x.requires_grad_(True)  # weights are frozen: the graph must start at the input
    with Hooks(model, [layer], stop_early=False) as cap:
        with torch.enable_grad():
            act = cap(x)[layer]
            if act.dim() != 4:
                raise UserError(f"layer {layer} has no spatial positions (output shape {tuple(act.shape[1:])}); "
                                f"pick a convolutional layer (see `vizsuite layers`)")
            logits = cap.output
            if logits is None or logits.dim() != 2:
                raise UserError(f"model {model.name} does not output class logits")
            target = int(logits[0].argmax()) if class_index is None else class_index
            if not 0 <= target < logits.shape[1]:
                raise UserError(f"class {target} out of range ({logits.shape[1]} classes)")
            grad, = torch.autograd.grad(logits[0, target], act)
    attr = position_attribution(act.detach(), grad)[0]
    return Blocks(image=x.detach()[0].cpu(), probs=torch.softmax(logits.detach()[0].float(), 0).cpu(),
                  target=target, acts=act.detach()[0].float().cpu(), attribution=attr.float().cpu())


def build_explain(model, image_path: Path, layer: str, site: Path, config: ExplainConfig,
                  command: Optional[list[str]] = None) -> dict:
    """Write the building-blocks page for one image into `site`; return a summary."""
    from ..images import load_image, save_png
    from .pages import copy_file, write_explain_site
    from ..analysis.support import heatmap_rgba

    start = time.perf_counter()
    config.validate()
    image_path = Path(image_path)
    load_image(image_path)  # missing/corrupt -> UserError before any work
    check_spatial(model, layer)
    class_index = model.class_index(config.class_label) if config.class_label else None
    site = Path(site)
    cache = Path(config.cache) if config.cache else site / ".cache" / "tasks"

    b = building_blocks(model, image_path, layer, class_index)
    c, h, w = b.acts.shape
    k = min(config.units, c)
    top_vals, top_units = b.acts.topk(k, dim=0)  # k x H x W
    positions, wanted = [], []
    for y in range(h):
        for x in range(w):
            units = [{"unit": int(u), "activation": round(float(v), 4)}
                     for v, u in zip(top_vals[:, y, x], top_units[:, y, x])]
            wanted += [t["unit"] for t in units]
            positions.append({"id": f"{y}_{x}", "y": y, "x": x,
                              "attribution": round(float(b.attribution[y, x]), 5), "units": units})
    # dictionary order: units by how often they are among a position's strongest
    counts = np.bincount(np.array(wanted), minlength=c)
    dictionary = [int(u) for u in np.argsort(-counts, kind="stable") if counts[u] > 0]
    thumbs = render_unit_icons(model, layer, dictionary, cache, config.icon, config.seed, config.icon_batch,
                               config.progress)

    items = []
    save_png(b.image, site / "image.png")
    items.append({"file": "image.png", "role": "input", "image": str(image_path), "size": int(b.image.shape[-1])})
    heat = heatmap_rgba(b.attribution.numpy(), int(b.image.shape[-1]))
    save_png(heat.astype(np.float32) / 255.0, site / "attribution.png")
    items.append({"file": "attribution.png", "role": "attribution", "method": "gradient_x_activation",
                  "layer": layer, "target": b.target, "grid": [h, w],
                  "positive_total": round(float(b.attribution.clamp_min(0).sum()), 5),
                  "negative_total": round(float(b.attribution.clamp_max(0).sum()), 5),
                  "values": [[round(float(v), 5) for v in row] for row in b.attribution]})
    units = []
    for u in dictionary:
        f = f"units/{u}.png"
        copy_file(thumbs[u], site / f)
        units.append({"unit": u, "file": f, "count": int(counts[u])})
        items.append({"file": f, "role": "unit", "model": model.name, "layer": layer, "unit": u,
                      "objective": "channel", "seed": config.seed, "steps": config.icon.steps,
                      "size": config.icon.size, "positions": int(counts[u])})
    kp = min(config.top, len(b.probs))
    pv, pi = b.probs.topk(kp)
    predictions = [{"index": int(i), "label": model.label(int(i)), "probability": round(float(v), 5)}
                   for v, i in zip(pv, pi)]
    data = {"model": model.name, "layer": layer, "image": str(image_path), "image_name": image_path.name,
            "image_file": "image.png", "heat_file": "attribution.png", "image_px": config.image_px,
            "grid": [h, w], "predictions": predictions,
            "target": {"index": b.target, "label": model.label(b.target),
                       "probability": round(float(b.probs[b.target]), 5)},
            "positions": positions, "units": units}
    write_explain_site(site, data, items, command)
    return {"target": data["target"], "units": len(units), "positions": len(positions),
            "seconds": time.perf_counter() - start, "site": str(site)}
