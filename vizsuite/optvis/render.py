"""render(): optimize a parametrized image batch to maximize an objective.

The loop does nothing but optimize: no display, no saving. Per step it draws transform
parameters (and alpha backgrounds) from one explicit `torch.Generator`, runs the model only as
far as the deepest layer the objective reads (`Hooks(stop_early=True)`; the full forward only
when logits are needed), and back-propagates into the image parameters alone
(`backward(inputs=...)`) of a frozen copy of the model, so no weight gradient is ever computed.

Speed (measured in benchmarks/results/render.md): the loop runs on `inference_copy(model)`, whose
batch norms are folded into the convolutions before them and whose 4-D weights are stored
channels_last; the batch is fed channels_last, so oneDNN runs its NHWC convolution and pooling
kernels without reorders and no separate normalization pass remains. Precision "auto" (the
default) is bf16 where the device computes it natively: the copy then stores its weights in
bf16 once (autocast would re-cast the frozen weights at every step, which cost batch-1 bf16 its
gain), the batch is cast at the model's input and the activations come back as fp32; image
parameters, objective values and the optimizer stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import shared_copy
from ..hooks import Hooks
from ..errors import UserError
from ..memory import keep_freed_memory
from ..zoo.spec import VisionModel
from .objectives import Context, Objective, as_objective
from .param import ImageParam, composite, random_background
from .convs import prepare_render_copy
from .prune import Unread
from .relu import RELU_GRADS
from .transforms import Transform, get_transforms


@dataclass
class RenderResult:
    """What render produced.

    images: N x C x H x W in [0, 1] after the last step (C = 4 with alpha), on the CPU.
    snapshots: {step: images} at each threshold. values: {step: (N,) objective values} at each
    threshold, measured on that step's transformed batch (what the optimizer saw).
    """

    images: torch.Tensor
    snapshots: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    seed: Optional[int] = None
    objective: str = ""
    layers: tuple = ()
    precision: str = "fp32"  # the precision used ("auto" resolved)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)

    def rgb(self, background: float = 1.0) -> torch.Tensor:
        """The images as RGB (RGBA composited over a flat grey level, default white)."""
        return composite(self.images, torch.tensor(background))

    # notebooks (docs/notebook.md): the picture shows itself in a cell
    def _repr_png_(self) -> bytes:
        from ..display import png_bytes

        return png_bytes(self.rgb()[0])

    def _repr_html_(self) -> str:
        from ..display import grid_html

        last = self.values.get(self.steps)
        caps = [f"image {i}" + (f": {float(last[i]):.3g}" if last is not None and i < len(last) else "")
                for i in range(self.images.shape[0])]
        return grid_html(list(self.rgb()), caps, title=self.objective or None)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _input_size(model: nn.Module) -> Optional[int]:
    return getattr(model, "input_size", None)


def default_relu_grad(model: nn.Module) -> str:
    """The ReLU gradient rule render uses for `model` unless told: its spec's, else "redirect"."""
    return getattr(getattr(model, "spec", None), "relu_grad", "redirect")


def make_optimizer(optimizer, params, lr: float):
    """'adam' | 'sgd' | a callable params -> optimizer."""
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params)
    if optimizer == "adam":
        # fused: one pass over the (large) spectrum per step instead of the foreach
        # implementation's several (~8x faster on a 16-image batch on the CPU); same update rule
        if FusedAdam.supports(params):
            return FusedAdam(params, lr=lr)
        return torch.optim.Adam(params, lr=lr)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise UserError(f"unknown optimizer {optimizer!r} (expected adam, sgd or a callable)")


class FusedAdam:
    """`torch.optim.Adam(params, lr, fused=True)`: the same aten kernel (`torch._fused_adam_`)
    with the same state, so the same numbers bit for bit (tests/test_optvis_render.py), without
    `torch.optim.Optimizer`, whose first method call imports torch._dynamo (its methods are
    wrapped in `_disable_dynamo`): 1.1 s of every render's start-up on this machine."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    @staticmethod
    def supports(params) -> bool:
        return hasattr(torch, "_fused_adam_") and all(
            p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        pick = lambda xs: [xs[i] for i in live]  # noqa: E731
        steps = pick(self.steps)
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(pick(self.params), [self.params[i].grad for i in live], pick(self.exp_avgs),
                           pick(self.exp_avg_sqs), [], steps, amsgrad=False, lr=self.lr,
                           beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
                           maximize=False)


PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.lru_cache(maxsize=None)
def _cpu_bf16_native() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16 or AMX-BF16)? Without them oneDNN
    emulates bf16 with fp32 instructions plus conversions: slower than fp32."""
    try:
        caps = torch.cpu.get_capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    except Exception:  # noqa: BLE001 - older torch: read the kernel's flags (Linux)
        try:
            with open("/proc/cpuinfo") as f:
                flags = set(f.read().split())
        except OSError:
            return False
        return bool(flags & {"avx512_bf16", "amx_bf16"})


def native_bf16(device=None) -> bool:
    """Does `device` (default: the CPU) compute bf16 natively (cached per device type)?"""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cpu":
        return _cpu_bf16_native()
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def resolve_precision(precision: str, device=None, model: Optional[nn.Module] = None) -> str:
    """"auto" -> "bf16" where `device` computes bf16 natively, else "fp32"; others as given.

    On a CPU, "auto" keeps a `model` with grouped (depthwise) convolutions in fp32: its step is
    bound by memory passes, not GEMMs, and bf16 measured no gain there (efficientnet_lite0, 16
    units: 33.9 vs 34.5 ms per image-step) or a loss (1 unit: 57 vs 52 ms; the bf16 copy also
    costs start-up), where InceptionV1 runs twice as fast (benchmarks/results/render.md)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        if not native_bf16(device):
            return "fp32"
        if model is not None and torch.device(device or "cpu").type == "cpu" and _grouped_convs(model):
            return "fp32"
        return "bf16"
    return precision


def _grouped_convs(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 for m in model.modules())


def model_precision(model: nn.Module, precision: str = "auto") -> str:
    """`resolve_precision` for `model` on the device its weights are on (what render would use)."""
    return resolve_precision(precision, _model_device(model), model)


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Forward:
    """Runs the model as far as the objective needs and builds the Context.

    precision "bf16": a model whose weights are stored in bf16 (render's inference copy) gets
    its input cast to bf16 at the boundary; any other model (the caller's own, when it cannot
    be copied) runs under bf16 autocast. Either way the captured activations and logits are
    cast back to fp32 before the objective reads them, so its reductions (channel means, Gram
    matrices, softmax) and the loss stay fp32, and the gradient reaches the fp32 image.
    """

    def __init__(self, model: nn.Module, objective: Objective, precision: str = "fp32"):
        precision = resolve_precision(precision, _model_device(model), model)
        self.model = model
        self.objective = objective
        self.layers = list(objective.layers)
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.stored = _model_dtype(model) == self.dtype
        # a copy whose stem normalizes and casts the [0, 1] input itself takes it as it is
        self.raw = isinstance(model, VisionModel) and model.raw_input

    def __enter__(self):
        self.capture = None
        if self.layers:
            # stop right after the deepest requested layer unless the logits are needed too
            self.capture = Hooks(self.model, self.layers, stop_early=not self.objective.needs_logits)
            self.capture.__enter__()
        return self

    def __exit__(self, *exc):
        if self.capture is not None:
            self.capture.__exit__(*exc)

    def __call__(self, images: torch.Tensor, model_input: torch.Tensor) -> Context:
        cast = self.precision != "fp32"
        if cast and self.stored:
            model_input = model_input if self.raw else model_input.to(self.dtype)
            scope = contextlib.nullcontext()
        else:
            scope = _autocast(self.precision, model_input.device)
        with scope:
            if self.capture is not None:
                acts = self.capture(model_input)
                logits = self.capture.output
            elif self.objective.needs_logits:
                acts, logits = {}, self.model(model_input)
            else:
                acts, logits = {}, None
        if cast:
            acts = {k: _fp32(v) for k, v in acts.items()}
            logits = _fp32(logits)
        return Context(images, acts, logits)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _fp32(t):
    return t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t


def render(model: nn.Module, objective, *, param: Optional[ImageParam] = None, size: Optional[int] = None,
           batch: Optional[int] = None, transforms="standard", steps: int = 512, lr: float = 0.05,
           optimizer="adam", thresholds: Sequence[int] = (), seed: Optional[int] = 0,
           generator: Optional[torch.Generator] = None, device=None, progress: bool = True,
           fft: bool = True, decorrelate: bool = True, decay_power: float = 1.0,
           alpha: bool = False, precision: str = "auto", channels_last: bool = True,
           fold_batchnorm: bool = True, relu_grad: Optional[str] = None) -> RenderResult:
    """Optimize images to maximize `objective` (an Objective, or a list: one per image).

    param: an ImageParam (default: `ImageParam(size or model input size, batch, fft=fft,
        decorrelate=decorrelate, decay_power=decay_power, alpha=alpha)` seeded from `seed`).
    transforms: 'standard' | 'lucid' | 'none' | a Transform | a list of transforms; the image is
        resized to the model's input size at the end of the chain.
    thresholds: steps at which to snapshot images and values (the last step always is).
    seed / generator: all randomness (start, transforms, backgrounds) comes from one CPU
        generator, so the same seed on the same device reproduces the pixels exactly.
    device: where to optimize (default: where the model's weights are); the model must be there.
    precision: "auto" (default: `resolve_precision`, bf16 where the device computes it natively,
        AVX512-BF16/AMX CPUs and bf16 CUDA GPUs, fp32 elsewhere), "fp32" (the bit-reproducible
        reference) or "bf16". bf16: the frozen copy stores its weights in bf16 and the batch is
        cast at the model's input; image parameters, objective and optimizer stay fp32. The
        precision used is `RenderResult.precision`.
    channels_last: feed the batch channels_last and store 4-D weights that way; the same
        computation, faster convolutions and pooling.
    fold_batchnorm: fold batch norms into the convolutions before them (outside the objective's
        layers); the same function up to float rounding, one memory pass less per layer.
    relu_grad: the gradient rule at ReLU / ReLU6 layers (`optvis.relu`): "redirect" (Lucid's:
        an image whose gradient dies at a layer gets it passed through there, towards the active
        range; otherwise exact), "leaky" (torch-lucent's InceptionV1: 0.1 x the gradient through
        inactive inputs) or "exact". Default: the model's `spec.relu_grad` ("redirect" for
        models without a spec). Needs the model copy: a model that cannot be deep-copied is
        rendered with exact ReLUs.
    The loop runs on `capture.inference_copy(model)`: an eval-mode copy with frozen weights (and
    the two options above); the caller's model, its modes, layout and hooks are never touched.
    """
    objective = as_objective(objective)
    relu_grad = default_relu_grad(model) if relu_grad is None else relu_grad
    if relu_grad not in RELU_GRADS:
        raise UserError(f"relu_grad must be one of {', '.join(RELU_GRADS)}, not {relu_grad!r}")
    if steps < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"lr must be a positive finite number, got {lr}")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else int(seed))
    device = torch.device(device) if device is not None else _model_device(model)
    if _model_device(model).type != device.type:
        raise UserError(f"model is on {_model_device(model)}, render asked for {device}")
    precision = resolve_precision(precision, device, model)
    parts = getattr(objective, "parts", None)
    if batch is None:
        batch = param.batch if param is not None else (len(parts) if parts else 1)
    if param is None:
        size = size or _input_size(model) or 224
        param = ImageParam(size, batch, fft=fft, decorrelate=decorrelate, decay_power=decay_power,
                           alpha=alpha, generator=generator)
    if param.batch != batch:
        raise UserError(f"param has batch {param.batch} but {batch} images were asked for")
    param = param.to(device)
    transform = get_transforms(transforms, _input_size(model), param.size[0])
    params = [p for p in param.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr)
    marks = sorted({int(t) for t in thresholds if 0 < int(t) <= steps} | {steps})

    result = RenderResult(images=torch.empty(0), steps=steps, seed=seed, objective=objective.description,
                          layers=objective.layers, precision=precision)
    net = None
    side = _input_size(model) or param.size[0]
    example = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    bar = None
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, disable=not progress, desc="render", unit="step", leave=False)
        start = time.perf_counter()
        net = _render_copy(model, example, tuple(objective.layers), objective.needs_logits, channels_last,
                           fold_batchnorm, precision, relu_grad)
        if net is model:  # not copyable: run the caller's model in eval mode, restored below
            was_training = model.training
            model.eval()
        with keep_freed_memory(), _Forward(net, objective, precision) as forward, Unread(net, objective) as unread:
            for step in range(1, steps + 1):
                opt.zero_grad(set_to_none=True)
                images = param()
                x = images
                if images.shape[1] == 4:
                    x = composite(images, random_background(images.shape[0], images.shape[-2:],
                                                            generator, device))
                x = transform(x, generator)
                if channels_last and not forward.raw:
                    # (casting to bf16 in the same `.to` measured no faster: A/B 1.05x step; a
                    # stem that normalizes the raw input reads any layout in its one pass)
                    x = x.contiguous(memory_format=torch.channels_last)
                ctx = forward(images, x)
                values = objective(ctx)
                loss = -values.sum()
                if not bool(torch.isfinite(loss)):
                    _non_finite(values, parts, objective, step)
                loss.backward(inputs=params)
                opt.step()
                if step == 1:     # the full step told the branch widths: skip the unread ones
                    unread.arm()
                if step in marks:
                    result.values[step] = values.detach().cpu()
                    result.snapshots[step] = images.detach().cpu()
                if bar is not None and (step % 8 == 0 or step == steps):
                    bar.set_postfix(objective=f"{values.detach().mean().item():.3g}", refresh=False)
                    bar.update(step - bar.n)
        result.seconds = time.perf_counter() - start
    finally:
        if bar is not None:
            bar.close()
        if net is model:
            model.train(was_training)
    with torch.no_grad():
        result.images = param().detach().cpu()
    if not bool(torch.isfinite(result.images).all()):
        raise UserError(f"render of {objective.description} stopped after step {steps}: "
                        f"the image became non-finite (NaN/inf)")
    result.snapshots[steps] = result.images
    return result


def _render_copy(model: nn.Module, example: torch.Tensor, keep: tuple, output: bool, channels_last: bool,
                 fold_batchnorm: bool, precision: str, relu_grad: str) -> nn.Module:
    """The shared inference copy (`capture.shared_copy`) in the compute precision with the ReLU
    rule applied, the stem unshuffled and each conv + ReLU pair the objective does not read fused
    (`convs.prepare_render_copy`): a CLI call with several batches, or a gallery rendering a
    layer's units and their negatives, builds (copies, folds, checks) it once."""
    return shared_copy(model, example, keep=keep, output=output, channels_last=channels_last,
                       fold_batchnorm=fold_batchnorm, dtype=None if precision == "fp32" else DTYPES[precision],
                       finish=(prepare_render_copy, relu_grad, keep))


def _non_finite(values: torch.Tensor, parts, objective, step: int):
    """Stop a render whose objective went NaN/inf: one line naming the unit and the step."""
    bad = [i for i, ok in enumerate(torch.isfinite(values.detach().reshape(-1)).tolist()) if not ok] or [0]
    i = bad[0]
    what = parts[i].description if parts and i < len(parts) else objective.description
    value = values.detach().reshape(-1)[i].item() if values.numel() > i else float("nan")
    raise UserError(f"render stopped at step {step}: objective {what} (image {i}) became {value} "
                    f"(non-finite; check the model's weights and the render options)")


@torch.no_grad()
def evaluate(model: nn.Module, objective, images: torch.Tensor, *, size: Optional[int] = None,
             background: float = 1.0) -> torch.Tensor:
    """Objective values (N,) of images shown plainly: no transforms, resized to the model's input
    size (antialiased bilinear), RGBA composited over flat `background` grey (default white)."""
    objective = as_objective(objective)
    device = _model_device(model)
    images = composite(images.to(device), torch.tensor(background, device=device))
    size = size or _input_size(model)
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True)
    was_training = model.training
    model.eval()
    try:
        with _Forward(model, objective) as forward:
            return objective(forward(images, images)).cpu()
    finally:
        model.train(was_training)
