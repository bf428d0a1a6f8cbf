"""attnseg.open and --backend auto (deploy/runtime.py, deploy/tune.py, deploy/backends/): which candidates are
eligible (by the accuracy record and by the CPU's kernels), the kept choice and its key, what -v says, each
backend behind the one interface, and the graphs shipped with the trained models. No timed assertions: the
timing itself is replaced where a test needs a winner (speed: benchmarks/auto_backend.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import attnseg
from attnseg.deploy import runtime, tune
from attnseg.deploy.backends import BACKENDS, Source
from attnseg.deploy.backends.cpu import Machine

ROOT = Path(__file__).resolve().parents[1]
AVX2 = Machine("Test CPU", 2, ("avx2",))
BF16 = Machine("Test CPU", 2, ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"))
RECORD = {"eager-fp32": 68.22, "eager-bf16": 68.09, "onnx-fp32": 68.22, "onnx-int8": 68.0,
          "openvino-fp32": 68.22, "openvino-bf16": 68.1, "openvino-int8": 67.75, "openvino-int8-bf16": 67.76}


def _names(cands):
    return {str(c) for c in cands}


def _installed(*mods):
    for m in mods:
        pytest.importorskip(m)


def test_a_shipped_model_may_run_any_candidate_its_record_allows():
    _installed("onnxruntime", "openvino")
    src = Source("m", module=torch.nn.Identity(), record=RECORD,
                 graphs={"fp32.onnx": Path("a.onnx"), "int8.onnx": Path("b.onnx"), "int8.xml": Path("c.xml")})
    cands, skipped = tune.candidates(src, BF16)
    assert _names(cands) == {"onnx-fp32-fixed", "onnx-int8", "openvino-bf16"}
    assert "no graph runtime is eligible" in skipped["eager-fp32"] and "0.15-0.5x" in skipped["eager-bf16"]
    # known to be beaten here: the pinned graph is the dynamic one plus a pinned session; OpenVINO bf16 on bf16
    # kernels beats its fp32
    assert "pinned" in skipped["onnx-fp32"] and "1.45-2.0x OpenVINO fp32" in skipped["openvino-fp32"]
    assert "more than 0.3 points lost" in skipped["openvino-int8"]  # 67.75 vs 68.22
    assert "more than 0.3 points lost" in skipped["openvino-int8-bf16"]


def test_bf16_is_not_a_candidate_without_bf16_kernels():
    _installed("onnxruntime", "openvino")
    src = Source("m", module=torch.nn.Identity(), record=RECORD, graphs={"int8.onnx": Path("b.onnx")})
    cands, skipped = tune.candidates(src, AVX2)
    assert _names(cands) == {"onnx-fp32-fixed", "onnx-int8", "openvino-fp32"}  # no bf16: OpenVINO fp32 timed
    assert "no bf16 kernels" in skipped["eager-bf16"] and "no bf16 kernels" in skipped["openvino-bf16"]
    assert "no int8 IR" in skipped["openvino-int8"]  # none shipped, none given


def test_a_model_without_a_record_runs_exact_fp32_paths_only():
    _installed("onnxruntime", "openvino")
    src = Source("my.safetensors", module=torch.nn.Identity())
    cands, skipped = tune.candidates(src, BF16)
    assert _names(cands) == {"onnx-fp32-fixed", "openvino-fp32"}
    assert "no accuracy record" in skipped["eager-bf16"]
    # pixel agreement on the user's calibration images makes a precision eligible at 99% and above
    cands, skipped = tune.candidates(src, BF16, agreement={"openvino-bf16": 0.995, "eager-bf16": 0.98})
    assert "openvino-bf16" in _names(cands) and "98.00%" in skipped["eager-bf16"]


def test_calibration_images_make_precisions_eligible_by_their_agreement_and_are_kept(tmp_path, monkeypatch,
                                                                                     tiny_ckpt):
    _installed("onnxruntime")
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path / "cache"))
    images = sorted((ROOT / "examples").glob("camvid_test_*.png"))[:2]
    lines = []
    src = runtime.resolve(tiny_ckpt, say=lines.append)
    assert src.agreement is None and "int8.onnx" not in src.graphs
    runtime._calibrate(src, images, threads=2)
    # every reduced precision this machine runs was compared with eager fp32's label maps, pixel by pixel
    assert "onnx-int8" in src.agreement and all(0.0 <= v <= 1.0 for v in src.agreement.values())
    assert src.graphs["int8.onnx"].is_file()  # quantized on these images, kept in the cache
    cands, skipped = tune.candidates(src, runtime.this_machine())
    for key, share in src.agreement.items():
        if share >= tune.AGREEMENT:
            assert key in _names(cands) or "no graph runtime is eligible" in skipped[key]
        else:
            assert f"{100 * share:.2f}% of the calibration pixels" in skipped[key]
    assert any(ln.startswith("calibrating ") for ln in lines) and any(ln.startswith("calibrated ") for ln in lines)
    # the same weights opened later see the same agreement and int8 graph, without the images
    again = runtime.resolve(tiny_ckpt)
    assert again.agreement == src.agreement and again.graphs["int8.onnx"] == src.graphs["int8.onnx"]
    # ... unless the int8 graph was damaged: then int8 is not eligible
    src.graphs["int8.onnx"].write_bytes(b"damaged")
    assert "onnx-int8" not in runtime.resolve(tiny_ckpt).agreement


def test_calibration_input_errors_are_one_line(tmp_path, monkeypatch, tiny_ckpt):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(runtime.OpenError, match="neither an image file nor a folder"):
        attnseg.open(tiny_ckpt, calibration=[tmp_path / "nothing.png"], progress=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(runtime.OpenError, match="none found in"):
        attnseg.open(tiny_ckpt, calibration=tmp_path / "empty", progress=None)
    with pytest.raises(runtime.OpenError, match="has an accuracy record"):
        attnseg.open("sanet-effnet-lite0-camvid", calibration=ROOT / "examples", progress=None)


def test_a_first_run_leaves_out_candidates_that_need_a_conversion_when_ready_ones_are_eligible(tmp_path,
                                                                                              monkeypatch):
    _installed("onnxruntime", "openvino")
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    # a shipped model with only an int8 IR: fp32 ONNX and OpenVINO bf16 would need the model exported first
    src = Source("m", module=attnseg.create_model("segformer-tiny", num_classes=3).eval(),
                 record={**RECORD, "openvino-int8": 68.1}, graphs={"int8.xml": Path("c.xml")})
    cands, skipped = tune.candidates(src, BF16, convert=False)
    assert _names(cands) == {"openvino-int8"}  # int8-bf16 is more than 0.3 points off in RECORD
    assert skipped["onnx-fp32-fixed"] == tune.NOT_READY and skipped["openvino-bf16"] == tune.NOT_READY
    assert "attnseg tune MODEL" in tune.NOT_READY
    # `attnseg tune` (convert=True) converts and times them too
    assert {"onnx-fp32-fixed", "openvino-bf16"} <= _names(tune.candidates(src, BF16)[0])
    # a model with no ready graph at all (a user's checkpoint) converts on its first run, said in a line
    user = Source("my.safetensors", module=src.module)
    assert _names(tune.candidates(user, BF16, convert=False)[0]) == {"onnx-fp32-fixed", "openvino-fp32"}


def test_an_asked_precision_limits_the_candidates():
    _installed("onnxruntime", "openvino")
    src = Source("m", module=torch.nn.Identity(), record={**RECORD, "openvino-bf16": 60.0})
    cands, _ = tune.candidates(src, BF16, precision="bf16")
    assert _names(cands) == {"openvino-bf16"}  # asked for: the record does not veto it


def test_a_missing_runtime_is_skipped_with_its_install_line(monkeypatch):
    monkeypatch.setattr(BACKENDS["openvino"], "missing", lambda: "pip install 'attnseg[openvino]'")
    src = Source("m", module=torch.nn.Identity(), record=RECORD)
    cands, skipped = tune.candidates(src, BF16)
    assert not any(c.backend == "openvino" for c in cands)
    assert skipped["openvino-fp32"] == "pip install 'attnseg[openvino]'"
    monkeypatch.setattr(BACKENDS["onnx"], "missing", lambda: "pip install 'attnseg[onnx]'")
    cands, _ = tune.candidates(src, BF16)  # no graph runtime at all: eager PyTorch is timed
    assert _names(cands) == {"eager-fp32", "eager-bf16"}


def test_the_choice_key_names_the_machine_threads_size_and_weights():
    src = Source("m", module=torch.nn.Identity(), key="w1")
    k = tune.choice_key(src, BF16, 2, (360, 480), None)
    assert k == tune.choice_key(src, BF16, 2, (360, 480), None)
    others = [tune.choice_key(src, AVX2, 2, (360, 480), None), tune.choice_key(src, BF16, 1, (360, 480), None),
              tune.choice_key(src, BF16, 2, (540, 720), None), tune.choice_key(src, BF16, 2, (360, 480), "bf16"),
              tune.choice_key(Source("m", key="w2"), BF16, 2, (360, 480), None)]
    assert len({k, *others}) == 6


def test_graph_caches_key_on_the_isr_factors_a_graph_bakes_in():
    """The same weights under another ISR setting make another graph: the key every graph cache uses (exported
    ONNX, converted OpenVINO, kept choices) differs, and returns when the setting is undone."""
    from attnseg.deploy.graphs import weights_key
    from attnseg.isr import apply, state

    for name, setting in (("edaformer-tiny", "2,2,1,1:2,2,2"), ("edaformer-tiny", "1,1,1,1:1,2,1"),
                          ("segformer-tiny", "2,1,1,1")):
        torch.manual_seed(0)
        model = attnseg.create_model(name, num_classes=3)
        plain = weights_key(model, "x")
        apply(model, setting)
        assert weights_key(model, "x") != plain and max(state(model)) == 2, (name, setting)
        apply(model, "1,1,1,1:1,1,1" if name.startswith("eda") else "1,1,1,1")
        assert weights_key(model, "x") == plain and set(state(model)) == {1}


def test_a_kept_choice_is_read_back_and_a_damaged_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    tune.keep_choice("k", {"choice": "onnx-int8", "images_per_s": {"onnx-int8": 3.0}, "when": 1})
    assert tune.read_choice("k")["choice"] == "onnx-int8"
    assert tune.read_choice("other") is None
    (tmp_path / "choices.json").write_text('{"k": {"choice": "onnx-in')  # cut short
    assert tune.read_choice("k") is None
    (tmp_path / "choices.json").write_text('[1, 2]')
    assert tune.read_choice("k") is None


class _Prepared:
    def __init__(self, backend, precision):
        self.backend, self.precision = backend, precision


def _fake_tuning(monkeypatch, speeds: dict):
    """Timing replaced by `speeds`, and graph backends' preparation by a stand-in (the choice is under test)."""
    calls = []
    for name in ("onnx", "openvino"):
        monkeypatch.setattr(BACKENDS[name], "prepare", lambda src, p, *a, _n=name: _Prepared(_n, p))

    def fake(src, cands, threads, size, kw):
        calls.append([str(c) for c in cands])
        return sorted(((c, speeds.get(str(c), 1.0)) for c in cands), key=lambda r: -r[1]), None

    monkeypatch.setattr(runtime, "tune", fake)
    return calls


def test_auto_measures_once_keeps_the_winner_and_says_why(tmp_path, monkeypatch):
    _installed("onnxruntime", "openvino")
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(runtime, "this_machine", lambda: AVX2)
    calls = _fake_tuning(monkeypatch, {"openvino-fp32": 9.0, "onnx-fp32-fixed": 7.0, "eager-fp32": 3.0})
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    lines = []
    chosen = attnseg.open(model, threads=1, size=(64, 96), verbose=True, progress=lines.append)
    assert chosen.backend == "openvino" and chosen.precision == "fp32" and len(calls) == 1
    assert "fastest of the eligible candidates at 96x64" in chosen.choice and "9.0 img/s" in chosen.choice
    assert "measured now" in chosen.choice and "onnx-fp32-fixed 7.0" in chosen.choice
    assert any(ln.startswith("timing 2 backend/precision candidates") for ln in lines) and chosen.choice in lines
    again = attnseg.open(model, threads=1, size=(64, 96), progress=lines.append)
    assert again.backend == "openvino" and len(calls) == 1  # read from the kept choice, not measured
    assert "(measured;" in again.choice
    attnseg.open(model, threads=2, size=(64, 96), progress=None)  # another thread count: measured again
    assert len(calls) == 2
    kept = json.loads((tmp_path / "choices.json").read_text())
    assert {e["choice"] for e in kept.values()} == {"openvino-fp32"}
    assert all(e["machine"] == AVX2.describe() for e in kept.values())


def test_a_check_on_the_loaded_model_runs_before_any_timing(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    calls = _fake_tuning(monkeypatch, {})
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    seen = []

    def refuse(m):
        seen.append(m)
        raise LookupError("options do not fit")

    with pytest.raises(LookupError):
        attnseg.open(model, size=(64, 96), progress=None, check=refuse)
    assert seen == [model] and calls == []  # refused before any candidate was timed or exported


def test_a_kept_choice_that_is_no_longer_eligible_is_measured_again(tmp_path, monkeypatch):
    _installed("onnxruntime", "openvino")
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    monkeypatch.setattr(runtime, "this_machine", lambda: AVX2)
    calls = _fake_tuning(monkeypatch, {"openvino-fp32": 9.0, "onnx-fp32-fixed": 8.0})
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    assert attnseg.open(model, size=(64, 96), progress=None).backend == "openvino"
    monkeypatch.setattr(BACKENDS["openvino"], "missing", lambda: "pip install 'attnseg[openvino]'")
    chosen = attnseg.open(model, size=(64, 96), progress=None)
    assert chosen.backend == "onnx" and len(calls) == 1  # the one candidate left runs without timing
    assert chosen.choice.endswith("the only eligible backend here")


def test_explicit_backends_and_their_one_line_errors():
    model = attnseg.create_model("segformer-tiny", num_classes=3).eval()
    eager = attnseg.open(model, backend="eager")
    assert eager.backend == "eager" and eager.precision == "fp32" and eager.choice.endswith("asked for")
    with pytest.raises(runtime.OpenError, match="expected one of auto, eager, onnx, openvino"):
        attnseg.open(model, backend="tensorrt")
    with pytest.raises(runtime.OpenError, match="nothing.onnx: file not found"):
        attnseg.open("nothing.onnx")
    for threads in (10**6, 0, -2, 2.5):  # a million threads asked of onnxruntime crashed it allocating 41 GB
        with pytest.raises(runtime.OpenError, match=r"threads .*: expected an integer in 1\.\.1024"):
            attnseg.open(model, backend="onnx", threads=threads)
    pytest.importorskip("onnxruntime")
    with pytest.raises(runtime.OpenError, match="no int8 graph"):
        attnseg.open(model, backend="onnx", precision="int8")
    from attnseg.deploy.graphs import GRAPHS_DIR

    ir = GRAPHS_DIR / "sanet-effnet-lite0-camvid.int8.xml"
    with pytest.raises(runtime.OpenError, match="is an OpenVINO IR, which runs with --backend openvino"):
        attnseg.open(ir, backend="onnx")  # onnxruntime would fail to parse it


def test_a_graph_file_that_is_not_one_attnseg_runs_is_one_line_in_every_runtime(tmp_path, capsys):
    """Random bytes, an empty file, an .xml that is no IR, an IR without inputs and a valid ONNX graph that is
    not a segmentation model: each is refused with one line naming the file, in every runtime that is asked."""
    _installed("onnxruntime", "openvino", "onnx")
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    (tmp_path / "junk.onnx").write_bytes(b"\x01" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.xml").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (tmp_path / "bare.xml").write_text('<?xml version="1.0"?><net name="x" version="11"><layers></layers></net>')
    a, b = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "ab")
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "g", [a], [b]),
                                opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "foreign.onnx"))
    want = {"junk.onnx": {"onnx": "onnxruntime cannot load junk.onnx", "openvino": "junk.onnx is not an ONNX graph"},
            "empty.onnx": {"onnx": "onnxruntime cannot load empty.onnx", "openvino": "empty.onnx holds no ONNX graph"},
            "junk.xml": {"onnx": "an .xml graph is an OpenVINO IR", "openvino": "junk.xml is not an OpenVINO IR"},
            "bare.xml": {"onnx": "an .xml graph is an OpenVINO IR",
                         "openvino": "bare.xml is not a segmentation graph attnseg can run (its inputs: none"},
            "foreign.onnx": {"onnx": "foreign.onnx is not a segmentation graph attnseg can run (its inputs: a;",
                             "openvino": "foreign.onnx is not a segmentation graph attnseg can run (its inputs: a;"}}
    for name, by_backend in want.items():
        for backend in ("auto", "onnx", "openvino"):
            expect = by_backend["openvino" if backend == "auto" and name.endswith(".xml") else
                                "onnx" if backend == "auto" else backend]
            with pytest.raises(runtime.OpenError) as e:
                attnseg.open(tmp_path / name, backend=backend, progress=None)
            assert expect in str(e.value) and "\n" not in str(e.value), (name, backend, str(e.value))
    from attnseg.cli import main

    assert main(["tune", str(tmp_path / "foreign.onnx")]) == 2  # every candidate fails the same way: said once
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.count("is not a segmentation graph") == 1 and "every candidate failed" not in err, err


@pytest.mark.slow
def test_every_backend_runs_the_same_function_behind_one_interface():
    _installed("onnxruntime", "openvino", "onnx")
    torch.manual_seed(0)
    model = attnseg.create_model("segformer-tiny", num_classes=4).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = model(x)
    for backend in ("eager", "onnx", "openvino"):
        m = attnseg.open(model, backend=backend, threads=1, progress=None)
        assert m.backend == backend and m.num_classes == 4
        torch.testing.assert_close(m(x), want, rtol=1e-4, atol=1e-4)
        seg = attnseg.Segmenter(m)
        assert seg.predict((torch.rand(50, 70, 3) * 255).byte().numpy()).shape == (50, 70)
    fixed = BACKENDS["onnx"].prepare(runtime.resolve(model), "fp32", 1, fixed=(64, 96))
    torch.testing.assert_close(fixed(x), want, rtol=1e-4, atol=1e-4)  # two images through the batch-1 session
    other = torch.randn(1, 3, 32, 64)  # another size: the dynamic session
    with torch.no_grad():
        torch.testing.assert_close(fixed(other), model(other), rtol=1e-4, atol=1e-4)
    shared = BACKENDS["onnx"].prepare(runtime.resolve(model), "fp32", 4, callers=2)  # a video's two calls at once
    assert shared.session.get_session_options().intra_op_num_threads == 2
    torch.testing.assert_close(shared(x), want, rtol=1e-4, atol=1e-4)


def test_the_shipped_graphs_match_the_shipped_weights_and_their_digests():
    from attnseg.deploy import graphs

    listed = graphs.manifest()
    assert set(listed) == set(attnseg.list_pretrained())
    for name in listed:
        got = graphs.shipped_graphs(name)
        assert set(got) == set(listed[name]["files"]), name  # every listed graph verified
    served = {"allmlp-effnet-lite2-camvid", "sanet-effnet-lite0-camvid", "lseg-effnet-lite2-camvid"}
    assert all("fp32.onnx" in graphs.shipped_graphs(n) for n in served)
    for name, entry in listed.items():  # the int8 graphs whose record is within the tolerance, unless rejected
        rec = tune.recorded()[name]
        built = set(entry["files"]) | set(entry["rejected"])
        assert ("int8.onnx" in built) == (tune.record_allows(rec, "onnx-int8") is None), name
        ir_ok = any(tune.record_allows(rec, k) is None for k in ("openvino-int8", "openvino-int8-bf16"))
        assert ("int8.xml" in built) == ir_ok, name
        assert all(entry["agreement"][k] >= 0.98 for k in entry["files"]), name  # checked when built


@pytest.mark.slow
def test_a_shipped_int8_graph_agrees_with_the_model_at_its_working_size():
    _installed("onnxruntime")
    name = "sanet-effnet-lite0-camvid"
    image = sorted((ROOT / "examples").glob("camvid_test_*.png"))[1]
    want = attnseg.Segmenter(attnseg.load_model(name)).predict(image)
    got = attnseg.Segmenter(attnseg.open(name, backend="onnx", precision="int8", progress=None)).predict(image)
    assert (got == want).mean() >= 0.98


def test_a_damaged_shipped_graph_is_not_used(tmp_path, monkeypatch):
    from attnseg.deploy import graphs

    name = "sanet-effnet-lite0-camvid"
    entry = graphs.manifest()[name]
    fake = tmp_path / "graphs"
    fake.mkdir()
    for files in entry["files"].values():
        for f in files:
            (fake / f).write_bytes((graphs.GRAPHS_DIR / f).read_bytes())
    first = next(iter(entry["files"]["fp32.onnx"]))
    data = bytearray((fake / first).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (fake / first).write_bytes(bytes(data))
    monkeypatch.setattr(graphs, "GRAPHS_DIR", fake)
    graphs.shipped_graphs.cache_clear()
    try:
        with pytest.warns(graphs.GraphNote, match="fp32.onnx graph of sanet-effnet-lite0-camvid is damaged"):
            got = graphs.shipped_graphs(name)
        assert "fp32.onnx" not in got and "int8.onnx" in got
    finally:
        graphs.shipped_graphs.cache_clear()


@pytest.mark.slow
def test_the_shipped_fp32_graph_computes_the_shipped_model():
    _installed("onnxruntime")
    name = "sanet-effnet-lite0-camvid"
    model = attnseg.load_model(name).eval()
    graph = attnseg.open(name, backend="onnx", progress=None)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=1e-4, atol=2e-4)


def test_the_shipped_lseg_ir_computes_the_shipped_model_and_needs_no_conversion(tmp_path, monkeypatch):
    _installed("openvino")
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path))
    name = "lseg-effnet-lite2-camvid"
    model = attnseg.load_model(name).eval()
    lines = []
    graph = attnseg.open(name, backend="openvino", progress=lines.append)
    assert not any("converting" in ln for ln in lines) and not (tmp_path / "openvino").exists()
    emb = model.text_encoder.encode(["road", "sky", "a red car"]).float()  # any labels, not only its classes
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(graph(x, text_embeddings=emb), model(x, text_embeddings=emb), rtol=1e-4,
                                   atol=2e-4)


def test_nothing_outside_deploy_constructs_a_backend():
    import re

    pattern = re.compile(r"\b(OnnxModel|OpenVinoModel|EagerBackend|OnnxBackend|OpenVinoBackend)\(")
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "src" / "attnseg").rglob("*.py")
                 if "deploy" not in p.relative_to(ROOT / "src" / "attnseg").parts and pattern.search(p.read_text())]
    assert offenders == []
