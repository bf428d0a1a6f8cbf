"""Parameter counts of the registered variants: counted on models built on the meta device, and written to
models/param_counts.json (`python -m attnseg.models.param_counts` after changing a variant; a test keeps the
file equal to the models) so that `attnseg models` lists them without building any."""
from __future__ import annotations

from ..param_table import PARAM_COUNTS_FILE, params_at, read_table
from . import MODELS, create_model, has_classifier


def count_parameters(name: str, num_classes: int = 150) -> int:
    """Parameters of `create_model(name, num_classes)` (built on the meta device: no memory, no weights read)."""
    import warnings

    import torch

    kw = {"num_classes": num_classes} if has_classifier(name) else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                m = create_model(name, **kw)
        except RuntimeError:  # a text encoder that will not load on the meta device (LSeg asks it its width)
            m = create_model(name, **kw)
    return sum(p.numel() for p in m.parameters())


def recorded_parameters(name: str, num_classes: int = 150) -> int | None:
    """The parameter count from `param_counts.json`, so `attnseg models` lists every variant without building
    one; None if not recorded."""
    entry = read_table().get(name)
    return None if entry is None else params_at(entry["params"], num_classes)


def write_parameter_table() -> None:
    """Regenerate param_counts.json (after changing a variant: `python -m attnseg.models.param_counts`)."""
    import json

    table = {n: {"params": [count_parameters(n, k) for k in (150, 151, 152)],
                 "description": MODELS[n]["description"]} for n in sorted(MODELS)}
    PARAM_COUNTS_FILE.write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    write_parameter_table()
