"""Where a render step's time goes, against its FLOP floor (issue 19).

    python benchmarks/render_step.py [--case inception8|effnet16|effnet1] [--precision auto,fp32]
                                     [--steps 12] [--threads 2] [--profile]

Builds exactly what `render` runs (its frozen copy, ImageParam, standard transforms, FusedAdam)
and times each phase of a step (parametrization, transforms, forward + objective, backward,
optimizer), median over --steps steps after 2 warm-up steps, all precisions interleaved in one
process. The FLOP floor: the step's FLOPs (torch.utils.flop_counter on one step: convolutions
and matmuls of the forward and of the input-gradient backward; no weight gradients exist) over
this machine's GEMM rate in that precision (the median of 1024^3 matmuls timed between the
steps, same threads: `GemmClock`). --profile prints torch.profiler's top operators per precision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {  # name: (model, layer, units, image px); the model sees its input size (224)
    "inception8": ("inceptionv1", "mixed4a", 8, 128),
    "effnet16": ("efficientnet_lite0", "blocks.4", 16, 224),
    "effnet1": ("efficientnet_lite0", "blocks.4", 1, 224),
}


class GemmClock:
    """The GEMM rate under the same machine load as the steps: one n^3 matmul per dtype timed
    between steps (`tick`), `rates()` their medians in GFLOP/s. This VM's speed drifts within
    minutes, and a best-of-N rate measured apart from the steps caught bursts (1130 GFLOP/s in
    bf16 where the median was ~500)."""

    def __init__(self, dtypes=(torch.float32, torch.bfloat16), n: int = 1024):
        self.n = n
        self.mats = {dt: (torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)) for dt in dtypes}
        self.times: dict = {dt: [] for dt in dtypes}
        for a, b in self.mats.values():
            a @ b                                   # warm-up

    def tick(self) -> None:
        for dt, (a, b) in self.mats.items():
            t = time.perf_counter()
            a @ b
            self.times[dt].append(time.perf_counter() - t)

    def rates(self) -> dict:
        return {dt: 2 * self.n ** 3 / statistics.median(v) / 1e9 for dt, v in self.times.items()}


class Step:
    """One render configuration whose step can be run phase by phase."""

    def __init__(self, model, layer: str, units: int, size: int, precision: str, seed: int = 0,
                 rewrites: bool = True):
        from vizsuite.optvis import ImageParam, channel
        from vizsuite.optvis.objectives import as_objective
        from vizsuite.optvis.render import (DTYPES, _Forward, _render_copy, default_relu_grad,
                                            make_optimizer, resolve_precision)
        from vizsuite.optvis.transforms import get_transforms

        self.precision = resolve_precision(precision, None, model)   # as render resolves it
        self.generator = torch.Generator().manual_seed(seed)
        objective = [channel(layer, u) for u in range(units)] if units > 1 else channel(layer, 0)
        self.objective = as_objective(objective)
        self.param = ImageParam(size, units, generator=self.generator)
        self.transform = get_transforms("standard", model.input_size, size)
        self.params = [self.param.raw]
        self.opt = make_optimizer("adam", self.params, 0.05)
        example = torch.rand(1, 3, model.input_size, model.input_size)
        self.spec = (model, layer, units, size, precision, seed)
        if rewrites:
            self.net = _render_copy(model, example, tuple(self.objective.layers), False, True, True,
                                    self.precision, default_relu_grad(model))
        else:   # the network as written (no fused or unshuffled convolutions): what FLOPs count
            from vizsuite.capture import shared_copy
            from vizsuite.optvis.relu import redirect_relus

            self.net = shared_copy(model, example, keep=tuple(self.objective.layers), output=False,
                                   channels_last=True, fold_batchnorm=True,
                                   dtype=None if self.precision == "fp32" else DTYPES[self.precision],
                                   finish=(redirect_relus, default_relu_grad(model)))
        self.forward = _Forward(self.net, self.objective, self.precision).__enter__()
        from vizsuite.optvis.prune import Unread

        self.unread = Unread(self.net, self.objective).__enter__()     # armed after a step, as render
        self.times: dict[str, list[float]] = {}

    def _tick(self, name, t0):
        t1 = time.perf_counter()
        self.times.setdefault(name, []).append(t1 - t0)
        return t1

    def run(self, record: bool = True):
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        images = self.param()
        t = self._tick("parametrization", t)
        x = self.transform(images, self.generator)
        if not self.forward.raw:            # as render feeds it
            x = x.contiguous(memory_format=torch.channels_last)
        t = self._tick("transforms", t)
        loss = -self.objective(self.forward(images, x)).sum()
        t = self._tick("forward+objective", t)
        loss.backward(inputs=self.params)
        t = self._tick("backward", t)
        self.opt.step()
        self.unread.arm()
        self._tick("optimizer", t)
        if not record:
            self.times.clear()

    def flops(self) -> int:
        """FLOPs of one step of the network as written: counted on a copy without render's conv
        rewrites, whose unshuffled stem multiplies zero-padded kernel taps (+4 % FLOPs) and whose
        fused convolutions flop_counter does not know."""
        from torch.utils.flop_counter import FlopCounterMode

        plain = Step(*self.spec, rewrites=False)
        counter = FlopCounterMode(display=False)
        with counter:
            plain.run(record=False)
        return counter.get_total_flops()

    def medians(self) -> dict[str, float]:
        out = {k: statistics.median(v) for k, v in self.times.items()}
        out["step"] = statistics.median([sum(x) for x in zip(*self.times.values())])
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="inception8", choices=list(CASES))
    ap.add_argument("--precision", default="auto,fp32")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vizsuite.zoo import load_model

    name, layer, units, size = CASES[args.case]
    model = load_model(name, random_weights=(name == "inceptionv1"))
    from vizsuite.memory import keep_freed_memory

    keep = keep_freed_memory()          # as render's loop runs (no page faults on reused buffers)
    keep.__enter__()
    steps = {p: Step(model, layer, units, size, p) for p in args.precision.split(",")}
    flops = {p: s.flops() for p, s in steps.items()}
    for s in steps.values():
        s.run(record=False)  # warm-up (oneDNN primitives)
    clock = GemmClock()
    for _ in range(args.steps):  # interleaved: the same minutes of machine load for every mode
        for s in steps.values():
            s.run()
        clock.tick()
    rates = clock.rates()
    print(f"{args.case}: {name} {layer}, {units} units, {size} px image -> {model.input_size} px, "
          f"{args.threads} threads; GEMM fp32 {rates[torch.float32]:.0f} GFLOP/s, "
          f"bf16 {rates[torch.bfloat16]:.0f} GFLOP/s (measured now)")
    for p, s in steps.items():
        from vizsuite.optvis.render import DTYPES

        m = s.medians()
        floor = flops[p] / (rates[DTYPES[s.precision]] * 1e9)
        per = {k: 1000 * v / units for k, v in m.items()}
        print(f"  {p} -> {s.precision}: {flops[p] / units / 1e9:.2f} GFLOP per image-step, floor "
              f"{1000 * floor / units:.1f} ms; step {per['step']:.1f} ms per image "
              f"({m['step'] / floor:.2f}x floor): " +
              ", ".join(f"{k} {v:.1f}" for k, v in per.items() if k != "step"))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for p, s in steps.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    s.run(record=False)
            print(f"--- {p} ({s.precision}), 3 steps")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
