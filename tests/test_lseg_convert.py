"""Official LSeg (isl-org/lang-seg) checkpoints: key conversion, checked against a reference forward pass
written here from the release's key layout and forward order (not through attnseg's modules)."""
import math

import pytest
import torch
import torch.nn.functional as F

import attnseg
from attnseg.checkpoint.formats.lseg import detect_variant
from attnseg.checkpoint import ModelLoadError

P = "net."  # the Lightning module's prefix
D, HEADS, PATCH, HOOKS = 32, 2, 16, [0, 1, 2, 3]  # dpt-tiny
CH, FEAT, C = [8, 16, 32, 32], 16, 384


def _official_state_dict(seed=0) -> dict[str, torch.Tensor]:
    """A random state dict with the release's names for a DPT/ViT LSeg of dpt-tiny's sizes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def put(name, *shape, scale=0.2):
        sd[P + name] = torch.randn(*shape, generator=g) * scale

    put("pretrained.model.cls_token", 1, 1, D)
    put("pretrained.model.pos_embed", 1, 1 + 4 * 4, D)
    put("pretrained.model.patch_embed.proj.weight", D, 3, PATCH, PATCH, scale=0.05)
    put("pretrained.model.patch_embed.proj.bias", D)
    for i in range(4):
        b = f"pretrained.model.blocks.{i}."
        for n in ("norm1", "norm2"):
            sd[P + b + n + ".weight"] = 1 + torch.randn(D, generator=g) * 0.1
            put(b + n + ".bias", D)
        put(b + "attn.qkv.weight", 3 * D, D), put(b + "attn.qkv.bias", 3 * D)
        put(b + "attn.proj.weight", D, D), put(b + "attn.proj.bias", D)
        put(b + "mlp.fc1.weight", 4 * D, D), put(b + "mlp.fc1.bias", 4 * D)
        put(b + "mlp.fc2.weight", D, 4 * D), put(b + "mlp.fc2.bias", D)
    sd[P + "pretrained.model.norm.weight"] = torch.ones(D)
    put("pretrained.model.norm.bias", D)
    put("pretrained.model.head.weight", 10, D), put("pretrained.model.head.bias", 10)  # timm classifier
    for lv, (c, kind) in enumerate(zip(CH, ("up4", "up2", "id", "down")), start=1):
        a = f"pretrained.act_postprocess{lv}."
        put(a + "0.project.0.weight", D, 2 * D), put(a + "0.project.0.bias", D)
        put(a + "3.weight", c, D, 1, 1), put(a + "3.bias", c)
        if kind.startswith("up"):
            k = int(kind[2:])
            put(a + "4.weight", c, c, k, k), put(a + "4.bias", c)
        elif kind == "down":
            put(a + "4.weight", c, c, 3, 3), put(a + "4.bias", c)
        put(f"scratch.layer{lv}_rn.weight", FEAT, c, 3, 3)
        r = f"scratch.refinenet{lv}."
        for u in ("resConfUnit1", "resConfUnit2"):
            for j in (1, 2):
                put(f"{r}{u}.conv{j}.weight", FEAT, FEAT, 3, 3, scale=0.1)
                sd[P + f"{r}{u}.bn{j}.weight"] = 1 + torch.randn(FEAT, generator=g) * 0.1
                put(f"{r}{u}.bn{j}.bias", FEAT)
                put(f"{r}{u}.bn{j}.running_mean", FEAT)
                sd[P + f"{r}{u}.bn{j}.running_var"] = torch.rand(FEAT, generator=g) + 0.5
                sd[P + f"{r}{u}.bn{j}.num_batches_tracked"] = torch.tensor(7)
        put(r + "out_conv.weight", FEAT, FEAT, 1, 1), put(r + "out_conv.bias", FEAT)
    put("scratch.head1.weight", C, FEAT, 1, 1), put("scratch.head1.bias", C)
    put("scratch.head_block.depthwise.depthwise.weight", 1, 1, 3, 3)
    put("scratch.head_block.depthwise.depthwise.bias", 1)
    put("clip_pretrained.token_embedding.weight", 20, 8)  # OpenAI CLIP: dropped, the text tower comes from transformers
    put("clip_pretrained.visual.proj", 8, 8)
    return sd


def _reference(sd, x, t, block_depth, bottleneck=True):
    """The release's forward (lseg_net.LSeg.forward + lseg_vit.forward_vit), written out on raw tensors."""
    w = lambda k: sd[P + k]  # noqa: E731
    B, _, H, W = x.shape
    gh, gw = H // PATCH, W // PATCH
    z = F.conv2d(x, w("pretrained.model.patch_embed.proj.weight"), w("pretrained.model.patch_embed.proj.bias"),
                 stride=PATCH).flatten(2).transpose(1, 2)
    pos = w("pretrained.model.pos_embed")
    grid = pos[0, 1:].reshape(1, 4, 4, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode="bilinear").permute(0, 2, 3, 1).reshape(1, gh * gw, D)
    z = torch.cat([w("pretrained.model.cls_token").expand(B, -1, -1), z], 1) + torch.cat([pos[:, :1], grid], 1)
    acts = []
    for i in range(4):
        b = f"pretrained.model.blocks.{i}."
        h = F.layer_norm(z, (D,), w(b + "norm1.weight"), w(b + "norm1.bias"), 1e-6)
        qkv = (h @ w(b + "attn.qkv.weight").T + w(b + "attn.qkv.bias")).reshape(B, -1, 3, HEADS, D // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) / math.sqrt(D // HEADS)).softmax(-1) @ v
        z = z + a.transpose(1, 2).reshape(B, -1, D) @ w(b + "attn.proj.weight").T + w(b + "attn.proj.bias")
        h = F.layer_norm(z, (D,), w(b + "norm2.weight"), w(b + "norm2.bias"), 1e-6)
        h = F.gelu(h @ w(b + "mlp.fc1.weight").T + w(b + "mlp.fc1.bias"))
        z = z + h @ w(b + "mlp.fc2.weight").T + w(b + "mlp.fc2.bias")
        acts.append(z)
    layers = []
    for lv, (act, kind) in enumerate(zip(acts, ("up4", "up2", "id", "down")), start=1):
        a = f"pretrained.act_postprocess{lv}."
        feats = torch.cat([act[:, 1:], act[:, :1].expand_as(act[:, 1:])], -1)
        y = F.gelu(feats @ w(a + "0.project.0.weight").T + w(a + "0.project.0.bias"))
        y = y.transpose(1, 2).unflatten(2, (gh, gw))
        y = F.conv2d(y, w(a + "3.weight"), w(a + "3.bias"))
        if kind.startswith("up"):
            y = F.conv_transpose2d(y, w(a + "4.weight"), w(a + "4.bias"), stride=int(kind[2:]))
        elif kind == "down":
            y = F.conv2d(y, w(a + "4.weight"), w(a + "4.bias"), stride=2, padding=1)
        layers.append(F.conv2d(y, w(f"scratch.layer{lv}_rn.weight"), padding=1))

    def rcu(r, u, v):
        out = F.conv2d(F.relu(v), w(f"{r}{u}.conv1.weight"), padding=1)
        out = F.batch_norm(out, w(f"{r}{u}.bn1.running_mean"), w(f"{r}{u}.bn1.running_var"), w(f"{r}{u}.bn1.weight"),
                           w(f"{r}{u}.bn1.bias"), eps=1e-5)
        out = F.conv2d(F.relu(out), w(f"{r}{u}.conv2.weight"), padding=1)
        out = F.batch_norm(out, w(f"{r}{u}.bn2.running_mean"), w(f"{r}{u}.bn2.running_var"), w(f"{r}{u}.bn2.weight"),
                           w(f"{r}{u}.bn2.bias"), eps=1e-5)
        return out + v

    def fusion(lv, x0, x1=None):
        r = f"scratch.refinenet{lv}."
        if x1 is not None:
            x0 = x0 + rcu(r, "resConfUnit1", x1)
        y = F.interpolate(rcu(r, "resConfUnit2", x0), scale_factor=2, mode="bilinear", align_corners=True)
        return F.conv2d(y, w(r + "out_conv.weight"), w(r + "out_conv.bias"))

    path = fusion(4, layers[3])
    for lv in (3, 2, 1):
        path = fusion(lv, path, layers[lv - 1])
    img = F.conv2d(path, w("scratch.head1.weight"), w("scratch.head1.bias"))
    img = img.permute(0, 2, 3, 1).reshape(-1, C)
    img = img / img.norm(dim=-1, keepdim=True)
    out = ((1 / 0.07) * img @ t.T).view(B, path.shape[2], path.shape[3], -1).permute(0, 3, 1, 2)

    def block(v, act=True):  # lseg_blocks.BottleneckBlock / DepthwiseBlock
        s = v.max(dim=1, keepdim=True)[0]
        n = v.shape[1]
        v = F.conv2d(v.reshape(-1, 1, *v.shape[2:]), w("scratch.head_block.depthwise.depthwise.weight"),
                     w("scratch.head_block.depthwise.depthwise.bias"), padding=1).view(B, n, *v.shape[2:])
        if bottleneck:
            v = v + s
        return F.leaky_relu(v) if act else v

    # lseg_net.LSeg.forward: `for _ in range(block_depth - 1)` activated passes, then one without (so 0 -> one)
    for _ in range(block_depth - 1):
        out = block(out)
    out = block(out, False)
    return F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)


def test_release_checkpoint_converts_and_matches_the_reference_forward(tmp_path):
    sd = _official_state_dict()
    hp = {"backbone": "clip_vitb32_384", "arch_option": 1, "block_depth": 2, "activation": "lrelu", "features": FEAT}
    path = tmp_path / "demo_e200.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": hp, "epoch": 3}, path)
    model = attnseg.load_model(path, model="lseg-vit-tiny")  # the tiny test architecture, release key layout
    assert model.config["block_type"] == "bottleneck" and model.config["block_depth"] == 2
    assert model.config["use_bn"] and model.meta["mean"] == [127.5] * 3
    assert abs(model.logit_scale.exp().item() - 1 / 0.07) < 1e-4
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 96)  # 4x6 patches: the 4x4 position grid is resized
    t = F.normalize(torch.randn(5, C), dim=1)
    with torch.no_grad():
        ref = _reference(sd, x, t, block_depth=2)
        got = model(x, text_embeddings=t)
    assert got.shape == ref.shape == (2, 5, 64, 96)
    assert (got - ref).abs().max() < 1e-4 * ref.abs().max()
    sd64 = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd64, "hyper_parameters": hp}, tmp_path / "m64.ckpt")
    model64 = attnseg.load_model(tmp_path / "m64.ckpt", model="lseg-vit-tiny", dtype=torch.float64)
    with torch.no_grad():
        ref64 = _reference(sd64, x.double(), t.double(), block_depth=2)
        got64 = model64(x.double(), text_embeddings=t.double())
    assert ((got64 - ref64).abs().max() / ref64.abs().max()).item() <= 1e-9


@pytest.mark.parametrize("arch_option", [1, 2])
@pytest.mark.parametrize("block_depth", [0, 1, 2, 3, None])
def test_block_depth_as_the_release_runs_it(tmp_path, arch_option, block_depth):
    """block_depth 0 (lang-seg's argparse default, also when the hyper-parameter is absent) applies one block."""
    sd = _official_state_dict(seed=1)
    hp = {"backbone": "clip_vitb32_384", "arch_option": arch_option, "activation": "lrelu"}
    if block_depth is not None:
        hp["block_depth"] = block_depth
    torch.save({"state_dict": sd, "hyper_parameters": hp}, tmp_path / "m.ckpt")
    model = attnseg.load_model(tmp_path / "m.ckpt", model="lseg-vit-tiny")
    assert model.config["block_type"] == {1: "bottleneck", 2: "depthwise"}[arch_option]
    torch.manual_seed(1)
    x, t = torch.randn(1, 3, 64, 96), F.normalize(torch.randn(4, C), dim=1)
    with torch.no_grad():
        ref = _reference(sd, x, t, block_depth=block_depth or 0, bottleneck=arch_option == 1)
        got = model(x, text_embeddings=t)
        no_block = _reference(sd, x, t, block_depth=0, bottleneck=arch_option == 1)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    if block_depth in (2, 3):  # the depths differ from each other, so the comparison can tell them apart
        assert (no_block - ref).abs().max() > 1e-2 * ref.abs().max()


def test_unused_head_block_weights_are_refused(tmp_path):
    """arch_option 0 builds no spatial block: weights for one would load and never run."""
    torch.save({"state_dict": _official_state_dict(), "hyper_parameters": {"arch_option": 0}}, tmp_path / "a.ckpt")
    with pytest.raises(ModelLoadError, match="head_block") as e:
        attnseg.load_model(tmp_path / "a.ckpt", model="lseg-vit-tiny")
    assert "\n" not in str(e.value)
    m = attnseg.load_model(tmp_path / "a.ckpt", model="lseg-vit-tiny", block_type="depthwise", block_depth=2)
    assert m.config["block_type"] == "depthwise" and m.config["block_depth"] == 2


def test_leftover_and_missing_keys_are_named(tmp_path):
    sd = _official_state_dict()
    sd[P + "scratch.mystery.weight"] = torch.zeros(1)
    del sd[P + "scratch.head_block.depthwise.depthwise.weight"], sd[P + "scratch.head_block.depthwise.depthwise.bias"]
    torch.save({"state_dict": sd, "hyper_parameters": {"arch_option": 0}}, tmp_path / "a.ckpt")
    with pytest.raises(ModelLoadError, match="scratch.mystery.weight"):
        attnseg.load_model(tmp_path / "a.ckpt", model="lseg-vit-tiny")
    sd = _official_state_dict()
    del sd[P + "scratch.refinenet2.out_conv.bias"]
    torch.save({"state_dict": sd, "hyper_parameters": {"arch_option": 1, "block_depth": 2}}, tmp_path / "b.ckpt")
    with pytest.raises(ModelLoadError, match=r"refinenet\.1\.out_conv\.bias"):
        attnseg.load_model(tmp_path / "b.ckpt", model="lseg-vit-tiny")
    sd = _official_state_dict()  # a head block but no hyper-parameters saying which kind
    torch.save({"state_dict": sd}, tmp_path / "c.ckpt")
    with pytest.raises(ModelLoadError, match="arch_option"):
        attnseg.load_model(tmp_path / "c.ckpt", model="lseg-vit-tiny")


def test_variant_detection_from_backbone_or_position_embedding():
    assert detect_variant({}, {"backbone": "clip_vitl16_384"}) == "lseg-vitl16"
    assert detect_variant({"net.pretrained.model.pos_embed": torch.zeros(1, 145, 768)}) == "lseg-vitb32"
    assert detect_variant({"net.pretrained.model.pos_embed": torch.zeros(1, 577, 1024)}) == "lseg-vitl16"
