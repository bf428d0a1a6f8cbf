"""Non-local weights from the cited PyTorch implementation, mmcv, and mmsegmentation's NLNet -> attnseg names.

Non-local block layouts (one block; `sub_sample` wraps g and phi in a Sequential with the max-pool, so
their keys gain a `.0`):
  AlexHex7/Non-local_pytorch   g[.0], theta, phi[.0]        W.0 conv + W.1 BN (or W, no BN)   concat_project.0
  mmcv NonLocal1d/2d/3d        g[.0].conv, theta.conv,      conv_out.conv (no bias with a     concat_project.conv
                               phi[.0].conv                 norm) + conv_out.bn (or .gn ...)
  attnseg                      g, theta, phi                W_z.0 + W_z.1 (or W_z)            concat_project
The gaussian mode has no theta/phi weights in any of them. Block options that are not weights
(`mode`, `sub_sample`, `use_scale`: mmcv's default True, the cited code has no scale) are the caller's.

mmsegmentation NLNet checkpoints (`{'state_dict', 'meta'}`, e.g. nonlocal_r50-d8_512x1024_80k_cityscapes):
  backbone.*                              ResNetV1c-D8 (deep stem `stem.0..7`)   -> backbone.* (same names)
  decode_head.convs.0 / convs.1           ConvModule 3x3 before / after the block -> decode_head.conv_in / conv_out
  decode_head.nl_block.*                  mmcv NonLocal2d (SyncBN conv_out)        -> decode_head.nl_block.*
  decode_head.conv_cat                    3x3 fuse of [x, y] (concat_input=True)   -> decode_head.conv_cat
  decode_head.conv_seg                    1x1 classifier (after dropout 0.1)       -> decode_head.cls
  auxiliary_head.convs.0 / conv_seg       FCN head on stage 3 (256 channels)       -> auxiliary_head.conv / cls
num_classes, the head width and the auxiliary width come from the tensors; `mode` is read from the keys
(concat_project: concatenation; theta: embedded_gaussian, mmseg's default; pass mode= for dot_product).
"""
from __future__ import annotations

import torch

from ..keymap import ConversionError, Rule, apply_key_map

NAME = "mmseg_nlnet"
DESCRIPTION = "mmsegmentation 1.x NLNet"
FAMILIES = ("nlnet",)


def _block_rules(src: str, dst: str, layout: str, use_bn: bool) -> list[Rule]:
    """Rules for one block whose keys start with `src` (regex-escaped prefix) into `dst`."""
    wz = f"{dst}W_z.0." if use_bn else f"{dst}W_z."
    if layout == "alexhex7":
        return [Rule(src + r"(g|phi)\.0\.(weight|bias)", dst + r"\1.\2"),
                Rule(src + r"(g|theta|phi)\.(weight|bias)", dst + r"\1.\2"),
                Rule(src + r"W\.0\.(weight|bias)", dst + r"W_z.0.\1"),
                Rule(src + r"W\.1\.(.+)", dst + r"W_z.1.\1"),
                Rule(src + r"W\.(weight|bias)", dst + r"W_z.\1"),
                Rule(src + r"concat_project\.0\.weight", dst + "concat_project.weight")]
    return [Rule(src + r"(g|phi)\.0\.conv\.(weight|bias)", dst + r"\1.\2"),
            Rule(src + r"(g|theta|phi)\.conv\.(weight|bias)", dst + r"\1.\2"),
            Rule(src + r"conv_out\.conv\.(weight|bias)", wz + r"\1"),
            Rule(src + r"conv_out\.(?:bn|norm|sync_bn|syncbn)\.(.+)", dst + r"W_z.1.\1"),
            Rule(src + r"concat_project\.conv\.weight", dst + "concat_project.weight")]


def block_layout(sd: dict) -> str:
    if any(k.startswith("conv_out.") or ".conv_out." in k for k in sd):
        return "mmcv"
    if any(k.startswith("W.") for k in sd):
        return "alexhex7"
    raise ConversionError("not a non-local block state dict (no conv_out.* (mmcv) or W.* (AlexHex7) keys)")


def _fill_conv_out_bias(out: dict, dst: str, like: str) -> None:
    """mmcv's ConvModule drops the conv bias before a norm layer; ours keeps one: it is zero."""
    if f"{dst}W_z.0.weight" in out and f"{dst}W_z.0.bias" not in out:
        out[f"{dst}W_z.0.bias"] = torch.zeros(out[f"{dst}W_z.0.weight"].shape[0], dtype=out[like].dtype)


def convert_block(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor] | None = None) -> dict:
    """One non-local block's state dict (AlexHex7 or mmcv layout, detected) -> attnseg names."""
    layout = block_layout(sd)
    use_bn = any(k.startswith("W.1.") or (k.startswith("conv_out.") and not k.startswith("conv_out.conv."))
                 for k in sd)  # a norm layer after W_z
    out = apply_key_map(sd, _block_rules("", "", layout, use_bn), fmt=f"{layout} non-local block")
    _fill_conv_out_bias(out, "", "g.weight")
    if expected is not None:
        from ..keymap import check_against

        check_against(out, expected, f"{layout} non-local block")
    return out


def load_nonlocal_weights(block: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load AlexHex7 or mmcv non-local block weights into an attnseg NonLocal1d/2d/3d, strictly."""
    block.load_state_dict(convert_block(sd, block.state_dict()), strict=True)


def detect(sd: dict) -> bool:
    return any(k.startswith("decode_head.nl_block.") for k in sd)


def from_mmseg_nlnet(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, bool]:
    """(state dict in our names, config the tensors determine, has_head=True)."""
    rules = [Rule(r"backbone\.(.+)", r"backbone.\1"),
             Rule(r"decode_head\.convs\.0\.(conv|bn)\.(.+)", r"decode_head.conv_in.\1.\2"),
             Rule(r"decode_head\.convs\.1\.(conv|bn)\.(.+)", r"decode_head.conv_out.\1.\2"),
             Rule(r"decode_head\.conv_cat\.(conv|bn)\.(.+)", r"decode_head.conv_cat.\1.\2"),
             Rule(r"decode_head\.conv_seg\.(weight|bias)", r"decode_head.cls.\1"),
             Rule(r"auxiliary_head\.convs\.0\.(conv|bn)\.(.+)", r"auxiliary_head.conv.\1.\2"),
             Rule(r"auxiliary_head\.conv_seg\.(weight|bias)", r"auxiliary_head.cls.\1")]
    rules += _block_rules(r"decode_head\.nl_block\.", "decode_head.nl_block.", "mmcv", use_bn=True)
    out = apply_key_map(sd, rules, fmt="mmsegmentation NLNet checkpoint")
    _fill_conv_out_bias(out, "decode_head.nl_block.", "decode_head.cls.weight")
    need = ("decode_head.cls.weight", "decode_head.conv_in.conv.weight", "auxiliary_head.conv.conv.weight")
    missing = [k for k in need if k not in out]
    if missing:
        raise ConversionError(f"mmsegmentation NLNet checkpoint without {', '.join(missing)}")
    cfg = {"num_classes": int(out["decode_head.cls.weight"].shape[0]),
           "channels": int(out["decode_head.conv_in.conv.weight"].shape[0]),
           "aux_channels": int(out["auxiliary_head.conv.conv.weight"].shape[0])}
    if "decode_head.nl_block.concat_project.weight" in out:
        cfg["mode"] = "concatenation"
    elif "decode_head.nl_block.theta.weight" not in out:
        cfg["mode"] = "gaussian"
    return out, cfg, True


def convert(ck, variant: str, overrides: dict) -> tuple[dict, dict]:
    out, cfg, _ = from_mmseg_nlnet(ck.sd)
    return out, cfg
