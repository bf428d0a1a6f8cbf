"""`attnseg models`: the registry and the shipped weights, read from models/param_counts.json (no torch);
`--card NAME` prints a shipped model's card."""
from __future__ import annotations

from ..param_table import params_at, read_table
from ..pretrained import list_pretrained
from . import options
from .common import CLIError


def add_arguments(verb: str, p):
    p.add_argument("--filter", default=None, help="only names containing this")
    p.add_argument("--card", default=None, metavar="NAME",
                   help="print the model card of a shipped model: training data and recipe, CamVid mIoU and speed "
                        "per backend and precision, intended use, known limits, licence")
    options.add_num_classes(p, hi=65535, help="classes for the parameter count (default 150)")
    return cmd_models


def cmd_models(args) -> int:
    """Lists the registry from models/param_counts.json: no model is built and torch is not imported."""
    if args.card:
        from ..pretrained import cards

        if args.card not in cards.names():
            raise CLIError(f"--card {args.card}: no card; shipped models with cards: {', '.join(cards.names())}")
        print(cards.text(args.card))
        return 0
    table = read_table()
    print(f"{'name':<20} {'params (M)':>10}  description")
    for name in sorted(table):
        if args.filter and args.filter not in name:
            continue
        n = params_at(table[name]["params"], args.num_classes)
        print(f"{name:<20} {n / 1e6:>10.2f}  {table[name]['description']}")
    shipped = list_pretrained()
    print(f"\nshipped trained weights: {', '.join(shipped) if shipped else 'none installed'}")
    return 0
