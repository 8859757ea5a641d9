"""`vizsuite layers MODEL [LAYER|UNIT ...]`: addressable layers with output shape and channels."""

from __future__ import annotations

import json

from .common import add_basis_arg, add_model_args, bases_from_args, check_units, model_from_args


def register(sub) -> None:
    p = sub.add_parser("layers", help="list a model's layers",
                       description="List every addressable layer (dotted named_modules() path) with its "
                                   "output shape and channel count; '*' marks the default layers. "
                                   "Give LAYER or LAYER:UNIT[@Y,X] arguments to show (and validate) only those.")
    add_model_args(p)
    p.add_argument("only", nargs="*", metavar="LAYER|UNIT", help="show only these layers / check these units")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_basis_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..capture import list_layers
    from ..errors import UserError, close_matches

    bases = bases_from_args(args)
    model = model_from_args(args)
    layers = list_layers(model)
    if args.only:
        by_name = {info.name: info for info in layers}
        picked = []
        for text in args.only:
            if ":" in text:
                picked.append(check_units(model, [text], bases, layers)[0][1])
            elif text in by_name:
                picked.append(by_name[text])
            else:
                raise UserError(f"unknown layer {text!r}{close_matches(text, by_name)}")
        layers = list(dict.fromkeys(picked))
    if args.json:
        print(json.dumps({"model": model.name, "input_size": model.input_size,
                          "layers": [info.as_dict() for info in layers]}, indent=2))
        return 0
    width = max(len(i.name) for i in layers)
    twidth = max(len(i.type) for i in layers)
    for info in layers:
        mark = "*" if info.default else " "
        shape = "x".join(str(s) for s in info.shape)
        print(f"{mark} {info.name:<{width}}  {info.type:<{twidth}}  {shape:<14} {info.channels:>5} ch")
    return 0
