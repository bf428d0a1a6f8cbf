"""Declarative key maps for converting foreign checkpoints (litgpt's weight_map idea).

A map is a list of `Rule(pattern, target, ...)`: `pattern` is a regular expression that must match
a whole source key; `target` is the destination key template (`\\1` groups), or None to drop the key
knowingly. a list target `[(template, (i, j, n)), ...]` takes chunks i..j-1 of n equal chunks along dim 0
(one source feeding several targets: a packed q/k/v), `part=(i, n)` marks a chunk that is concatenated with its siblings along
dim 0 (several sources feeding one target), `fn` transforms the tensor (e.g. 1x1 conv -> linear).

`apply_key_map` consumes every source key; a key no rule matches is an error, and so is any key
the model expects that no rule produced, so a silent half-load is impossible.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch


class ConversionError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    pattern: str
    target: str | None
    part: tuple[int, int] | None = None
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None


def conv1x1_to_linear(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1) if t.ndim == 4 else t


def _listing(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def apply_key_map(src: dict[str, torch.Tensor], rules: list[Rule], expected: dict[str, torch.Tensor] | None = None,
                  fmt: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Convert `src` with `rules`; if `expected` (a model state dict) is given, check keys and shapes."""
    compiled = [(re.compile(r.pattern), r) for r in rules]
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    n_parts: dict[str, int] = {}
    leftover = []
    for key, value in src.items():
        for rx, rule in compiled:
            m = rx.fullmatch(key)
            if m is None:
                continue
            if rule.target is None:
                break
            targets = [(rule.target, None)] if not isinstance(rule.target, list) else rule.target
            for tmpl, split in targets:
                dst = m.expand(tmpl)
                t = value
                if split is not None:
                    i, j, n = split
                    step = t.shape[0] // n
                    t = t[i * step:j * step]
                if rule.fn is not None:
                    t = rule.fn(t)
                if rule.part is not None:
                    i, n = rule.part
                    parts.setdefault(dst, {})[i] = t
                    n_parts[dst] = n
                else:
                    if dst in out:
                        raise ConversionError(f"{fmt}: two source keys map to {dst}")
                    out[dst] = t
            break
        else:
            leftover.append(key)
    if leftover:
        raise ConversionError(f"{fmt}: {len(leftover)} key(s) no rule maps: {_listing(leftover)}")
    for dst, chunks in parts.items():
        if sorted(chunks) != list(range(n_parts[dst])):
            raise ConversionError(f"{fmt}: {dst} needs {n_parts[dst]} parts, found parts {sorted(chunks)}")
        out[dst] = torch.cat([chunks[i] for i in range(n_parts[dst])], dim=0)
    if expected is not None:
        check_against(out, expected, fmt)
    return out


def check_against(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], fmt: str) -> None:
    missing = set(expected) - set(sd)
    unexpected = set(sd) - set(expected)
    if missing or unexpected:
        msg = [f"{fmt} does not match the model architecture:"]
        if missing:
            msg.append(f"missing {len(missing)} key(s): {_listing(missing)}")
        if unexpected:
            msg.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
        msg.append("Check that `model=` names the architecture the checkpoint was trained with.")
        raise ConversionError("\n  ".join(msg))
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
           for k, v in expected.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise ConversionError(f"{fmt}: shape mismatch for {len(bad)} tensor(s) (wrong variant?): "
                              + "; ".join(bad[:6]))
