"""The `dataset_examples` task kind: one streaming pass per layer over an image folder, the
top-k most positive and negative examples of each unit with their receptive-field crops."""

from __future__ import annotations

from .core import register_task
from .results import DatasetResult


def planned_images(task, what: str = "build") -> list:
    """The images of `task["images_dir"]`, refused (UserError) when the folder's list is not the
    one the task was planned with (`task["images_signature"]`): a task's key covers its images."""
    from ..errors import UserError
    from ..hashing import image_list_signature
    from ..images import find_images

    paths = find_images(task["images_dir"])
    if image_list_signature(paths) != task["images_signature"]:
        raise UserError(f"images in {task['images_dir']} changed since the {what} was planned; run it again")
    return paths


@register_task("dataset_examples", result=DatasetResult)
def dataset_examples_task(task, ctx) -> DatasetResult:
    """Task kind `dataset_examples`: writes examples.npz/.json and pos_/neg_ PNG crops per unit;
    with param `overlays`, each crop's activation-map PNG (`*_map.png`) and the whole images
    (`full_<index>.jpg`)."""
    from ..analysis.examples import compute_dataset_examples

    paths = planned_images(task)
    layer = task["layer"]
    from ..units import Unit

    # channel indices, or unit records (dictionary features: `LAYER/NAME:K`, docs/units.md)
    units = {layer: [Unit.from_json(u) if isinstance(u, dict) else int(u) for u in task["units"]]} \
        if task.get("units") is not None else None
    overlays = bool(task.get("overlays", False))
    ex = compute_dataset_examples(ctx.model, [layer], paths, k=task["k"], units=units,
                                  crop_px=task["crop_px"], progress=False, overlays=overlays)[layer]
    ex.save(ctx.path("examples.npz"))
    files = {str(u): ex.save_crops(u, ctx.out_dir, prefix=f"u{u}_", full=overlays) for u in ex.units}
    if overlays:
        ex.save_full_images(ctx.out_dir)
    finite = lambda a: [] if a is None else [float(v) if v == v else None for v in a]  # noqa: E731 - NaN: unknown
    return DatasetResult(ex.units, ex.rf.as_dict(), files, ex.meta.get("skipped", 0),
                         mean=finite(ex.mean), selectivity=finite(ex.selectivity))
