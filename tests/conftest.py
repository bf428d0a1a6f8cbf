import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CAMVID = SHARED_DATA / "camvid"
ADE_SAMPLE = SHARED_DATA / "ade20k_sample"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# converted OpenVINO graphs are cached per model: a session's cache, never the user's ~/.cache; made here, it is
# removed when the session ends (graphs of a few hundred MB would otherwise pile up in the temp folder run by run)
_SESSION_CACHE = None
if "ATTNSEG_CACHE" not in os.environ:
    _SESSION_CACHE = __import__("tempfile").mkdtemp(prefix="attnseg_test_cache_")
    os.environ["ATTNSEG_CACHE"] = _SESSION_CACHE
# datasets named without a root are looked for under $ATTNSEG_DATA (the shipped configs name none)
os.environ.setdefault("ATTNSEG_DATA", str(SHARED_DATA))


class _SignalStack(__import__("ctypes").Structure):
    _fields_ = [("ss_sp", __import__("ctypes").c_void_p), ("ss_flags", __import__("ctypes").c_int),
                ("ss_size", __import__("ctypes").c_size_t)]


@pytest.fixture(autouse=True)
def _signals_on_the_thread_stack():
    """Handled signals (the SIGCHLD handler torch's DataLoader installs in this process) are delivered on the main
    thread's own stack, not on an alternate signal stack: in a full run the suite's process was killed by a
    SIGSEGV the kernel raised while delivering a signal during a later test (the alternate stack it had been given
    was no longer usable), always at the same test. Linux only; elsewhere a no-op."""
    import ctypes

    try:
        ctypes.CDLL(None).sigaltstack(ctypes.byref(_SignalStack(None, 2, 0)), None)  # SS_DISABLE
    except (OSError, AttributeError):
        pass
    yield


def pytest_sessionfinish(session, exitstatus):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """`data` for tests that read ../shared/data (through its fixtures), `e2e` for the browser and live-server
    tests; `slow` is set on each test by hand (measured, see `make check`)."""
    for item in items:
        if {"camvid_root", "ade_sample_root"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)
        if item.module.__name__.endswith("test_serve_e2e") or item.name.startswith("test_panorama_and_line_through_the_server"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def camvid_root():
    if not (CAMVID / "train.txt").is_file():
        pytest.skip(f"CamVid not found at {CAMVID} (see ../shared/data/README.md)")
    return CAMVID


@pytest.fixture
def ade_sample_root():
    if not (ADE_SAMPLE / "objectInfo150.csv").is_file():
        pytest.skip(f"ADE20K sample not found at {ADE_SAMPLE}")
    return ADE_SAMPLE


@pytest.fixture
def tiny_ckpt(tmp_path):
    """A random segformer-tiny checkpoint (3 classes) that records a working short side of 48."""
    import attnseg

    torch.manual_seed(0)
    m = attnseg.create_model("segformer-tiny", num_classes=3)
    return str(attnseg.save_model(m, tmp_path / "tiny.safetensors", class_names=["sky", "road", "car"],
                                  short_side=48))


def without_modules(tmp_path: Path, *names: str) -> dict:
    """The environment of a child process in which importing any of `names` fails as if it were not installed
    (a sitecustomize that refuses them), to test what a user without an extra sees."""
    block = tmp_path / "no_modules"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(names)!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    return {**os.environ, "PYTHONPATH": str(block)}


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running stats and affine params (parity tests must see them)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


# -- one ONNX export per distinct model in a test session --------------------------------------------------------
# torch.export takes 20-60 s per graph on these 2 cores, and several tests export the very same model (the
# tiny_ckpt segformer through `--backend onnx`, `export --dynamic` and export_onnx). Within one session the code
# cannot change, so a graph exported once for a model (architecture, every plain attribute of every module, the
# weights, the metadata, the export arguments) is the graph any later export of it would write: later exports
# copy it. Every distinct model is still exported for real once, and export errors are never cached.

def _export_key(model, dynamic=True, example_size=(256, 320), opset=20) -> str:
    from attnseg.models.layers import converting_for_runtime  # OpenVINO's conversion traces other forms

    h = hashlib.sha256(repr((type(model).__qualname__, getattr(model, "variant", None), bool(dynamic),
                             tuple(example_size), opset, converting_for_runtime())).encode())
    plain = (bool, int, float, str, type(None))
    for name, m in model.named_modules():
        attrs = sorted((k, v) for k, v in vars(m).items() if k != "source"  # the file it was loaded from
                       and (isinstance(v, plain) or isinstance(v, (tuple, list)) and all(isinstance(x, plain) for x in v)))
        h.update(repr((name, type(m).__qualname__, attrs)).encode())
    h.update(json.dumps(getattr(model, "meta", None), sort_keys=True, default=str).encode())
    for k, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(repr((k, str(t.dtype), tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@pytest.fixture(scope="session", autouse=True)
def _one_export_per_model(tmp_path_factory):
    try:
        import attnseg.deploy.export as ex
    except ImportError:
        yield
        return
    real, store, made = ex.export_onnx, tmp_path_factory.mktemp("onnx_exports"), {}

    def export_onnx(model, path, *args, **kwargs):
        key = _export_key(model.eval(), *args, **kwargs)  # the real export runs the model in eval mode too
        if key not in made:
            out = real(model, path, *args, **kwargs)
            made[key] = store / f"{key}.onnx"
            shutil.copyfile(out, made[key])
            return out
        from attnseg.io import atomic_write

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(Path(path), lambda tmp: shutil.copyfile(made[key], tmp))

    ex.export_onnx = export_onnx
    yield
    ex.export_onnx = real
