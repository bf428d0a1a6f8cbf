"""Key maps for SegFormer / MiT checkpoints from the three places users get them (the formats
`transformers`, `mmseg` and `official` use them; EDAFormer releases share the official layout).

Our parameter names are the official NVlabs release's, so those checkpoints need only a filter
(`official`). transformers and mmsegmentation 1.x name things differently (maps below). Each
function returns (state_dict in our names, config overrides the checkpoint implies).

transformers (v4 names, which `save_pretrained` still writes and the hub holds) -> ours:
  segformer.encoder.patch_embeddings.{i}.proj / .layer_norm  -> backbone.patch_embed{i+1}.proj / .norm
  segformer.encoder.block.{i}.{j}.layer_norm_1 / _2           -> backbone.block{i+1}.{j}.norm1 / norm2
  ....attention.self.query                                    -> ....attn.q
  ....attention.self.key + .value (concatenated, k first)     -> ....attn.kv
  ....attention.self.sr / .layer_norm                         -> ....attn.sr / attn.norm
  ....attention.output.dense                                  -> ....attn.proj
  ....mlp.dense1 / dwconv.dwconv / dense2                     -> ....mlp.fc1 / dwconv.dwconv / fc2
  segformer.encoder.layer_norm.{i}                            -> backbone.norm{i+1}
  decode_head.linear_c.{i}.proj                               -> decode_head.linear_c{i+1}.proj
  decode_head.linear_fuse / batch_norm / classifier           -> decode_head.linear_fuse.conv / .bn / linear_pred
transformers 5 module names (stages.{i}.blocks.{j}.attention.q_proj, ...) are first renamed to v4.

mmsegmentation 1.x -> ours (MiT LayerNorms all eps 1e-6; head style "mmseg"):
  backbone.layers.{i}.0.projection / .norm        -> backbone.patch_embed{i+1}.proj / .norm
  backbone.layers.{i}.1.{j}.attn.attn.in_proj_*   -> rows [0:C] attn.q, rows [C:3C] attn.kv
  backbone.layers.{i}.1.{j}.attn.attn.out_proj    -> attn.proj
  backbone.layers.{i}.1.{j}.ffn.layers.0 / 1 / 4  -> mlp.fc1 (1x1 conv -> linear) / mlp.dwconv.dwconv / mlp.fc2
  backbone.layers.{i}.2                           -> backbone.norm{i+1}
  decode_head.convs.{i} / fusion_conv / conv_seg  -> decode_head.linear_c{i+1} / linear_fuse / linear_pred
"""
from __future__ import annotations

import re

import torch

from ...families import family
from ..keymap import ConversionError, Rule, apply_key_map, conv1x1_to_linear

# transformers 5 module names -> the v4 names used in saved checkpoints
_HF_V5_TO_V4 = [
    (r"(^|\.)stages\.(\d+)\.patch_embeddings\.", r"\1encoder.patch_embeddings.\2."),
    (r"(^|\.)stages\.(\d+)\.blocks\.", r"\1encoder.block.\2."),
    (r"(^|\.)stages\.(\d+)\.layer_norm\.", r"\1encoder.layer_norm.\2."),
    (r"attention\.q_proj", "attention.self.query"), (r"attention\.k_proj", "attention.self.key"),
    (r"attention\.v_proj", "attention.self.value"),
    (r"attention\.sequence_reduction\.sequence_reduction", "attention.self.sr"),
    (r"attention\.sequence_reduction\.layer_norm", "attention.self.layer_norm"),
    (r"attention\.o_proj", "attention.output.dense"), (r"mlp\.fc1", "mlp.dense1"), (r"mlp\.fc2", "mlp.dense2"),
    (r"layernorm_before", "layer_norm_1"), (r"layernorm_after", "layer_norm_2"),
    (r"decode_head\.linear_projections\.", "decode_head.linear_c."),
]


def hf_rules(enc: str, head: bool) -> list[Rule]:
    """`enc`: source prefix of the encoder ("segformer.encoder." or "encoder."); targets under `backbone.` if head."""
    e, o = re.escape(enc), ("backbone." if head else "")
    blk = e + r"block\.(\d+)\.(\d+)\."
    rules = [
        Rule(e + r"patch_embeddings\.(\d+)\.proj\.(weight|bias)", o + r"patch_embed{S\1}.proj.\2"),
        Rule(e + r"patch_embeddings\.(\d+)\.layer_norm\.(weight|bias)", o + r"patch_embed{S\1}.norm.\2"),
        Rule(blk + r"layer_norm_1\.(weight|bias)", o + r"block{S\1}.\2.norm1.\3"),
        Rule(blk + r"layer_norm_2\.(weight|bias)", o + r"block{S\1}.\2.norm2.\3"),
        Rule(blk + r"attention\.self\.query\.(weight|bias)", o + r"block{S\1}.\2.attn.q.\3"),
        Rule(blk + r"attention\.self\.key\.(weight|bias)", o + r"block{S\1}.\2.attn.kv.\3", part=(0, 2)),
        Rule(blk + r"attention\.self\.value\.(weight|bias)", o + r"block{S\1}.\2.attn.kv.\3", part=(1, 2)),
        Rule(blk + r"attention\.self\.sr\.(weight|bias)", o + r"block{S\1}.\2.attn.sr.\3"),
        Rule(blk + r"attention\.self\.layer_norm\.(weight|bias)", o + r"block{S\1}.\2.attn.norm.\3"),
        Rule(blk + r"attention\.output\.dense\.(weight|bias)", o + r"block{S\1}.\2.attn.proj.\3"),
        Rule(blk + r"mlp\.dense1\.(weight|bias)", o + r"block{S\1}.\2.mlp.fc1.\3"),
        Rule(blk + r"mlp\.dwconv\.dwconv\.(weight|bias)", o + r"block{S\1}.\2.mlp.dwconv.dwconv.\3"),
        Rule(blk + r"mlp\.dense2\.(weight|bias)", o + r"block{S\1}.\2.mlp.fc2.\3"),
        Rule(e + r"layer_norm\.(\d+)\.(weight|bias)", o + r"norm{S\1}.\2"),
    ]
    if head:
        rules += [
            Rule(r"decode_head\.linear_c\.(\d+)\.proj\.(weight|bias)", r"decode_head.linear_c{S\1}.proj.\2"),
            Rule(r"decode_head\.linear_fuse\.weight", "decode_head.linear_fuse.conv.weight"),
            Rule(r"decode_head\.batch_norm\.(.+)", r"decode_head.linear_fuse.bn.\1"),
            Rule(r"decode_head\.classifier\.(weight|bias)", r"decode_head.linear_pred.\1"),
        ]
    else:
        rules.append(Rule(r"classifier\.(weight|bias)", None))  # ImageNet classifier of mit-*: not used
    return rules


def _renumber(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Resolve the `{S<n>}` placeholders the rules emit into 1-based stage numbers."""
    rx = re.compile(r"\{S(\d+)\}")
    return {rx.sub(lambda m: str(int(m.group(1)) + 1), k): v for k, v in sd.items()}


def from_transformers(sd: dict[str, torch.Tensor], hf_config: dict | None = None) -> tuple[dict, dict, bool]:
    """transformers Segformer* state dict -> (ours, config overrides, has_head)."""
    for pat, rep in _HF_V5_TO_V4:
        sd = {re.sub(pat, rep, k): v for k, v in sd.items()}
    has_head = any(k.startswith("decode_head.") for k in sd)
    enc = "segformer.encoder." if any(k.startswith("segformer.encoder.") for k in sd) else "encoder."
    out = _renumber(apply_key_map(sd, hf_rules(enc, has_head), fmt="transformers Segformer checkpoint"))
    cfg = dict(norm_eps=1e-5, patch_norm_eps=1e-5, sr_norm_eps=1e-5)  # transformers: nn.LayerNorm defaults
    if hf_config:
        cfg.update(embed_dims=list(hf_config["hidden_sizes"]), depths=list(hf_config["depths"]),
                   num_heads=list(hf_config["num_attention_heads"]), sr_ratios=list(hf_config["sr_ratios"]),
                   mlp_ratios=list(hf_config["mlp_ratios"]), patch_sizes=list(hf_config["patch_sizes"]),
                   strides=list(hf_config["strides"]), in_chans=int(hf_config.get("num_channels", 3)))
        if has_head:
            cfg.update(decoder_dim=int(hf_config["decoder_hidden_size"]))
    return out, cfg, has_head


def mmseg_rules() -> list[Rule]:
    blk = r"backbone\.layers\.(\d+)\.1\.(\d+)\."
    return [
        Rule(r"backbone\.layers\.(\d+)\.0\.projection\.(weight|bias)", r"backbone.patch_embed{S\1}.proj.\2"),
        Rule(r"backbone\.layers\.(\d+)\.0\.norm\.(weight|bias)", r"backbone.patch_embed{S\1}.norm.\2"),
        Rule(blk + r"norm1\.(weight|bias)", r"backbone.block{S\1}.\2.norm1.\3"),
        Rule(blk + r"norm2\.(weight|bias)", r"backbone.block{S\1}.\2.norm2.\3"),
        Rule(blk + r"attn\.attn\.in_proj_(weight|bias)",
             [(r"backbone.block{S\1}.\2.attn.q.\3", (0, 1, 3)), (r"backbone.block{S\1}.\2.attn.kv.\3", (1, 3, 3))]),
        Rule(blk + r"attn\.attn\.out_proj\.(weight|bias)", r"backbone.block{S\1}.\2.attn.proj.\3"),
        Rule(blk + r"attn\.sr\.(weight|bias)", r"backbone.block{S\1}.\2.attn.sr.\3"),
        Rule(blk + r"attn\.norm\.(weight|bias)", r"backbone.block{S\1}.\2.attn.norm.\3"),
        Rule(blk + r"ffn\.layers\.0\.(weight|bias)", r"backbone.block{S\1}.\2.mlp.fc1.\3", fn=conv1x1_to_linear),
        Rule(blk + r"ffn\.layers\.1\.(weight|bias)", r"backbone.block{S\1}.\2.mlp.dwconv.dwconv.\3"),
        Rule(blk + r"ffn\.layers\.4\.(weight|bias)", r"backbone.block{S\1}.\2.mlp.fc2.\3", fn=conv1x1_to_linear),
        Rule(r"backbone\.layers\.(\d+)\.2\.(weight|bias)", r"backbone.norm{S\1}.\2"),
        Rule(r"decode_head\.convs\.(\d+)\.(conv|bn)\.(.+)", r"decode_head.linear_c{S\1}.\2.\3"),
        Rule(r"decode_head\.fusion_conv\.(conv|bn)\.(.+)", r"decode_head.linear_fuse.\1.\2"),
        Rule(r"decode_head\.conv_seg\.(weight|bias)", r"decode_head.linear_pred.\1"),
        Rule(r"data_preprocessor\..*", None),  # mean/std buffers of mmseg's preprocessor: carried in our config
    ]


def from_mmseg(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, bool]:
    """mmsegmentation 1.x SegFormer state dict -> (ours, config overrides, has_head)."""
    # in_proj packs [q; k; v]: rows [0:C] are q, rows [C:3C] are our kv ([k; v], the same order)
    out = _renumber(apply_key_map(sd, mmseg_rules(), fmt="mmsegmentation SegFormer checkpoint"))
    has_head = any(k.startswith("decode_head.") for k in out)
    cfg = dict(norm_eps=1e-6, patch_norm_eps=1e-6, sr_norm_eps=1e-6)
    if has_head:
        cfg["head_style"] = "mmseg"
    return out, cfg, has_head


def from_official(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, bool]:
    """NVlabs/SegFormer (mmseg 0.x) checkpoint: our names already; drop what the release never uses."""
    drop = [Rule(r"decode_head\.conv_seg\.(weight|bias)", None),  # mmseg BaseDecodeHead's unused classifier
            Rule(r"head\.(weight|bias)", None),  # ImageNet classifier in the mit_b*.pth encoder files
            Rule(r"(.+)", r"\1")]
    out = apply_key_map(sd, drop, fmt="official SegFormer checkpoint")
    return out, {}, any(k.startswith("decode_head.") for k in out)


def head_widths(out: dict[str, torch.Tensor]) -> dict:
    """The decoder widths a converted SegFormer / EDAFormer state dict determines (not the variant name):
    mmsegmentation 1.x trains B1-B5 with a 256-wide head where NVlabs uses 768, so a name cannot say."""
    cfg = {}
    for key in ("decode_head.linear_c1.proj.weight", "decode_head.linear_c1.conv.weight"):  # SegFormer
        if key in out:
            cfg["decoder_dim"] = int(out[key].shape[0])
    if "decode_head.attn4.mlp.fc1.weight" in out:  # EDAFormer: fuse width and decoder MLP ratio
        cfg["decoder_dim"] = int(out["decode_head.linear_fuse.conv.weight"].shape[0])
        fc1 = out["decode_head.attn4.mlp.fc1.weight"]
        cfg["decoder_mlp_ratio"] = fc1.shape[0] / fc1.shape[1]
    return cfg


def fit_to_variant(out: dict[str, torch.Tensor], cfg: dict, has_head: bool, variant: str) -> tuple[dict, dict]:
    """A converted SegFormer-layout state dict made to fit `variant`: an encoder variant keeps the backbone
    (a full segmentation checkpoint loads as an encoder), a segmenter reads its head widths from the tensors
    and refuses an encoder-only file."""
    if family(variant).kind != "encoder":  # widths from the tensors (the variant names depth and family only)
        cfg = {**head_widths(out), **cfg}
        if not any(k.startswith("backbone.") for k in out):
            raise ConversionError(f"checkpoint is an encoder only (no decode head); load it with the encoder "
                                  f"variant or start training a {variant} from it")
        return out, cfg
    if has_head:
        out = {k: v for k, v in out.items() if k.startswith("backbone.")}
    cfg = {k: v for k, v in cfg.items() if k != "decoder_dim"}
    return {k.removeprefix("backbone."): v for k, v in out.items()}, cfg
