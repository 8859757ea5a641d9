"""`vizsuite models`: list the zoo."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo", description="List the registered zoo models.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..zoo import list_models

    specs = list_models()
    if args.json:
        print(json.dumps([{"name": s.name, "description": s.description, "weights": s.weights_source,
                           "input_size": s.input_size, "mean": s.mean, "std": s.std,
                           "classes": len(s.labels), "default_layers": list(s.default_layers),
                           "source": s.source, "licence": s.licence} for s in specs], indent=2))
        return 0
    width = max(len(s.name) for s in specs)
    for s in specs:
        print(f"{s.name:<{width}}  {s.description}")
    print("\nAlso: timm:NAME, torchvision:NAME, path/file.py:function, path/model.pt (TorchScript)")
    return 0
