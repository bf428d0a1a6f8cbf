"""Inference Spatial Reduction (EDAFormer, Sec. 3.3): one home for the setting, its text form and the grid.

ISR multiplies the spatial-reduction ratio of attention layers of a trained model at inference time: the
encoder's stages (EDAFormer and, by the same mechanism, SegFormer's MiT) and EDAFormer's decoder stages.
A setting is written ENC[:DEC], e.g. "2,2,1,1:2,2,2" (encoder stages 1-4, decoder stages 2-4); "1,1,1,1"
(and "1,1,1,1:1,1,1") restores the model. The CLI's --isr, the server's isr field, `attnseg isr-sweep` and the
benchmarks all read settings through `IsrSetting.parse` and apply them with `apply`.
"""
from __future__ import annotations

from dataclasses import dataclass

# the trade-off grid `attnseg isr-sweep` measures and the server offers (the first is "off")
GRID = ("1,1,1,1:1,1,1", "2,1,1,1:1,1,1", "2,2,1,1:1,1,1", "1,1,1,1:2,2,2", "2,2,1,1:2,2,2", "2,2,2,1:2,2,2",
        "4,2,1,1:2,2,2", "4,4,2,1:4,2,2")


class IsrError(ValueError):
    """A malformed setting, or one the model cannot take (one line)."""


@dataclass(frozen=True)
class IsrSetting:
    encoder: tuple[int, ...] | None
    decoder: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> IsrSetting:
        """"2,2,1,1:2,2,2" -> IsrSetting((2, 2, 1, 1), (2, 2, 2)); "2,2,1,1" leaves the decoder unset."""
        enc, _, dec = str(text).partition(":")
        try:
            return cls(tuple(int(v) for v in enc.split(",")) if enc else None,
                       tuple(int(v) for v in dec.split(",")) if dec else None)
        except ValueError:
            raise IsrError(f"ISR setting expects ENC[:DEC] comma-separated integers, e.g. 2,2,1,1:2,2,2; got "
                           f"{str(text)[:64]!r}") from None

    def kwargs(self) -> dict:
        """The keyword arguments of a model's `set_isr` (no decoder key when the setting names none)."""
        out = {"encoder": list(self.encoder) if self.encoder is not None else None}
        if self.decoder is not None:
            out["decoder"] = list(self.decoder)
        return out

    def __str__(self) -> str:
        enc = ",".join(map(str, self.encoder or ()))
        return enc + (":" + ",".join(map(str, self.decoder)) if self.decoder is not None else "")


def supports_isr(model) -> bool:
    return hasattr(model, "set_isr")


def apply(model, setting: str | IsrSetting) -> IsrSetting:
    """Set `setting` on `model` (an ISR-capable PyTorch model); IsrError names what is wrong."""
    s = setting if isinstance(setting, IsrSetting) else IsrSetting.parse(setting)
    if not supports_isr(model):
        raise IsrError("the model has no spatial-reduction attention (SegFormer and EDAFormer do; an exported "
                       "graph has its setting baked in)")
    try:
        if "encoder" in _parameters(model):  # SegFormer, EDAFormer
            model.set_isr(**s.kwargs())
        else:  # an encoder alone (MiT, EFT): set_isr(factors)
            if s.decoder is not None and any(f != 1 for f in s.decoder):
                raise IsrError(f"an encoder has no decoder to reduce; got decoder factors {list(s.decoder)}")
            model.set_isr(list(s.encoder) if s.encoder is not None else None)
    except ValueError as e:
        raise IsrError(str(e)) from None
    return s


def state(model) -> tuple[int, ...]:
    """The ISR factor every attention layer of `model` runs with now (empty for a model without ISR): what a graph
    made from the model bakes in, so caches of exported and converted graphs key on it."""
    return tuple(int(m.isr) for m in model.modules() if isinstance(getattr(m, "isr", None), int))


def _parameters(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.set_isr).parameters)


def reset(model) -> None:
    """Restore the trained reduction ratios."""
    apply(model, GRID[0] if has_decoder_isr(model) else "1,1,1,1")


def has_decoder_isr(model) -> bool:
    return supports_isr(model) and "decoder" in _parameters(model)


def accepted(model, grid=GRID) -> list[str]:
    """The settings of `grid` this model accepts (SegFormer: encoder only, so decoder factors must be 1)."""
    if not supports_isr(model):
        return []
    ok = []
    for setting in grid:
        try:
            apply(model, setting)
            ok.append(setting)
        except IsrError:
            pass
    apply(model, grid[0])
    return ok
