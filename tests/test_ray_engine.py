"""The Ray engine on a local Ray instance (2 CPUs): predict / eval / robustness give what one process gives, a
killed actor is replaced and its images retried, an interrupted job resumes with only the rest, and two Ray
Serve replicas answer like `predict` and survive one replica's death."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnseg.cli import main
from conftest import without_modules
from helpers import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
SANET = "sanet-effnet-lite0-camvid"
PREDICT = ["--model", SANET, "--backend", "eager", "--threads", "1"]  # workers run with the local run's threads


def camvid_images(camvid_root, n: int) -> list[str]:
    return [str(p) for p in sorted((camvid_root / "test").glob("*.png"))[:n]]


def label_maps(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def assert_same_maps(a: dict, b: dict, tolerance: float = 1e-5) -> None:
    """Same files; label maps equal, or at most `tolerance` of the pixels differ (near-ties)."""
    assert sorted(a) == sorted(b)
    differ = sum(int((a[k] != b[k]).sum()) for k in a)
    assert differ <= tolerance * sum(v.size for v in a.values()), f"{differ} pixels differ"


def ray_processes(name: str) -> list:
    import psutil

    return [p for p in psutil.process_iter(["name", "cmdline"])
            if name in (p.info["name"] or "") or name in " ".join(p.info["cmdline"] or [])]


@pytest.fixture(scope="module")
def local_maps(camvid_root, tmp_path_factory):
    """`predict` on one process: the reference every Ray run is compared with (100 CamVid test images)."""
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    try:
        assert main(["predict", *camvid_images(camvid_root, 100), "--out", str(out), *PREDICT]) == 0
    finally:
        torch.set_num_threads(threads)
    return label_maps(out)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from attnseg.ray_engine import connect

    connect(num_cpus=2)
    yield
    ray.shutdown()


def test_without_ray_one_line_says_how_to_install(tmp_path):
    env = without_modules(tmp_path, "ray")
    r = subprocess.run([sys.executable, "-m", "attnseg.cli", "predict", str(ROOT / "examples"), "--out",
                        str(tmp_path / "o"), "--engine", "ray", *PREDICT], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: --engine ray needs Ray: pip install 'attnseg[ray]'")
    assert not list((tmp_path / "o").glob("*.png"))


def test_an_address_where_nothing_answers_fails_in_one_line_within_the_timeout(tmp_path):
    pytest.importorskip("ray")
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "attnseg.cli", "predict", str(ROOT / "examples"), "--out",
                        str(tmp_path / "o"), "--engine", "ray", "--address", f"127.0.0.1:{port}",
                        "--connect-timeout", "2", *PREDICT], capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 2, r.stderr
    assert lines[0] == f"Ray: waiting up to 2 s for a cluster at 127.0.0.1:{port}"  # said before the wait
    assert f"--address 127.0.0.1:{port}: no Ray cluster answered within 2 s" in lines[1], lines
    assert time.monotonic() - t0 < 60  # the process start and the model check included; the wait is 2 s


@pytest.mark.parametrize("sig, rc", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)])
def test_ctrl_c_and_sigterm_stop_the_wait_for_a_cluster_at_once(tmp_path, sig, rc):
    pytest.importorskip("ray")
    proc = subprocess.Popen([sys.executable, "-m", "attnseg.cli", "predict", str(ROOT / "examples"), "--out",
                             str(tmp_path / "o"), "--engine", "ray", "--address", f"127.0.0.1:{free_port()}",
                             "--connect-timeout", "600", *PREDICT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    seen = []
    for line in proc.stderr:  # the model is checked first; then the wait, said in one line
        seen.append(line)
        if line.startswith("Ray: waiting up to 600 s for a cluster at 127.0.0.1:"):
            break
    assert seen and seen[-1].startswith("Ray: waiting"), seen
    proc.send_signal(sig)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == rc and time.monotonic() - t0 < 5, "".join(seen) + err
    assert "Traceback" not in err


@pytest.mark.slow
def test_interrupted_job_resumes_with_only_the_rest(camvid_root, tmp_path):
    images = camvid_images(camvid_root, 40)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "attnseg.cli", "predict", *images, "--out", str(out), "--engine", "ray",
           "--workers", "1", "--batch", "2", *PREDICT]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(list(out.glob("*_overlay.jpg"))) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    first, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in first and "does only the rest" in first
    done = len(list(out.glob("*_overlay.jpg")))
    assert 6 <= done < 40
    for p in out.glob("*.png"):  # what exists is complete
        Image.open(p).load()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    written = int(r.stdout.split(" image(s) segmented")[0].split()[-1])
    skipped = int(r.stdout.split(" skipped")[0].split()[-1])
    print(first, r.stdout)
    assert skipped >= done - 2 and written + skipped == 40 and written <= 40 - done + 2  # a batch may be cut mid-way
    assert len(list(out.glob("*.png"))) == 40 and len(list(out.glob("*_overlay.jpg"))) == 40
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_predict_on_ray_writes_what_one_process_writes(camvid_root, local_maps, ray_local, tmp_path, capsys):
    images = camvid_images(camvid_root, 40)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert main(["predict", *images, str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--engine", "ray",
                 "--workers", "2", *PREDICT]) == 1  # the broken image fails alone
    out = capsys.readouterr()
    assert "40 image(s) segmented" in out.out and "1 failed" in out.out and "broken.png" in out.err
    got = label_maps(tmp_path / "o")
    assert_same_maps(got, {k: local_maps[k] for k in got}, tolerance=0)  # same threads: identical
    assert len(list((tmp_path / "o").glob("*_overlay.jpg"))) == 40
    # the same command again: every output is checked and kept
    assert main(["predict", *images, "--out", str(tmp_path / "o"), "--engine", "ray", "--workers", "2",
                 *PREDICT]) == 0
    assert "0 image(s) segmented" in capsys.readouterr().out
    # an output cut short or of another size is redone
    first = tmp_path / "o" / Path(images[0]).with_suffix(".png").name
    first.write_bytes(first.read_bytes()[:100])
    Image.new("P", (5, 5)).save(tmp_path / "o" / Path(images[1]).with_suffix(".png").name)
    assert main(["predict", *images, "--out", str(tmp_path / "o"), "--engine", "ray", "--workers", "2",
                 *PREDICT]) == 0
    assert "2 image(s) segmented" in capsys.readouterr().out
    assert_same_maps(label_maps(tmp_path / "o"), {k: local_maps[k] for k in got}, tolerance=0)
    # a URL (here file://; s3:// goes through the same pyarrow filesystem layer) gives the same outputs
    (tmp_path / "url").mkdir()
    for p in images[:3]:
        (tmp_path / "url" / Path(p).name).symlink_to(p)
    assert main(["predict", f"file://{tmp_path / 'url'}", "--out", str(tmp_path / "u"), "--engine", "ray",
                 *PREDICT]) == 0
    assert "3 image(s) segmented" in capsys.readouterr().out
    assert_same_maps(label_maps(tmp_path / "u"), {k: local_maps[k] for k in label_maps(tmp_path / "u")}, 0)


@pytest.mark.slow
def test_a_killed_actor_is_replaced_and_its_images_retried(camvid_root, local_maps, ray_local, tmp_path, capsys):
    out = tmp_path / "o"
    killed = []

    def kill_one():
        deadline = time.time() + 300
        while time.time() < deadline and len(list(out.glob("*_overlay.jpg"))) < 20:
            time.sleep(0.05)
        workers = ray_processes("MapWorker")
        if workers:
            killed.append(workers[0].pid)
            workers[0].kill()

    t = threading.Thread(target=kill_one)
    t.start()
    rc = main(["predict", *camvid_images(camvid_root, 100), "--out", str(out), "--engine", "ray", "--workers", "2",
               "--batch", "4", *PREDICT])
    t.join()
    text = capsys.readouterr().out
    print(text)
    assert killed, "no actor process was found to kill"
    assert rc == 0 and "100 image(s) segmented" in text
    assert "died and were restarted by Ray" in text
    assert_same_maps(label_maps(out), local_maps)  # every output once, complete, equal to one process's
    assert len(list(out.glob("*_overlay.jpg"))) == 100 and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_eval_and_robustness_on_ray_equal_one_process(camvid_root, ray_local, tmp_path):
    common = ["--dataset", "camvid", "--data-root", str(camvid_root), "--limit", "10", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        for engine in ("local", "ray"):
            assert main(["eval", "--model", SANET, "--backend", "eager", "--split", "val", *common,
                         "--out", str(tmp_path / f"{engine}.json"), "--engine", engine]) == 0
            assert main(["robustness", "--model", SANET, "--split", "test", *common, "--corruptions",
                         "gaussian_noise,fog", "--severities", "1", "--out", str(tmp_path / f"rob_{engine}"),
                         "--engine", engine]) == 0
    finally:
        torch.set_num_threads(threads)
    one, ray = (json.loads((tmp_path / f"{e}.json").read_text()) for e in ("local", "ray"))
    assert one["confusion"] == ray["confusion"] and abs(one["mIoU"] - ray["mIoU"]) < 1e-6
    rows = [json.loads((tmp_path / f"rob_{e}" / "robustness.json").read_text())["rows"] for e in ("local", "ray")]
    assert len(rows[0]) == 3 and rows[0] == rows[1]


@pytest.mark.slow
def test_eval_on_two_rendezvous_nodes_equals_one_process(camvid_root, tmp_path):
    """Two torchrun "nodes" (--nnodes 2, one process each) joined by c10d rendezvous, as on two machines."""
    common = ["eval", "--model", SANET, "--backend", "eager", "--dataset", "camvid", "--data-root",
              str(camvid_root), "--split", "val", "--limit", "9", "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER"))}
    r1 = subprocess.run([sys.executable, "-m", "attnseg.cli", *common, "--out", str(tmp_path / "one.json")],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    port = free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                               "1", "--node_rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint",
                               f"127.0.0.1:{port}", "--rdzv-id", "evaltest", "-m", "attnseg.cli", *common, "--out",
                               str(tmp_path / "two.json")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert r1.returncode == 0 and all(n.returncode == 0 for n in nodes), [o[1][-1500:] for o in outs]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["confusion"] == two["confusion"] and one["mIoU"] == two["mIoU"] and two["images"] == 9


def _segment(url: str, image: bytes) -> tuple[int, bytes, str]:
    body, boundary = _multipart(image)
    req = urllib.request.Request(url + "/api/segment", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers.get("X-Attnseg-Replica", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("X-Attnseg-Replica", "")
    except OSError as e:
        return 0, str(e).encode(), ""


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "attnsegboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, boundary


@pytest.mark.slow
@pytest.mark.e2e
def test_ray_serve_replicas_answer_like_predict_and_survive_a_death(camvid_root, local_maps, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "attnseg.cli", "serve", "--engine", "ray", "--replicas", "2",
                             "--port", str(port), *PREDICT], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/readyz", proc)
        images = camvid_images(camvid_root, 5)
        data = [Path(p).read_bytes() for p in images]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: _segment(url, data[i % 5]), range(40)))
        assert [a[0] for a in answers] == [200] * 40
        for i, (_, body, _) in enumerate(answers):
            want = local_maps[Path(images[i % 5]).name]
            assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(body))), want)
        replicas = {a[2] for a in answers}
        assert len(replicas) == 2, replicas
        seen = {}
        for _ in range(60):  # each replica's own /metrics counts the requests it answered
            text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
            rid = next(ln.split('"')[1] for ln in text.splitlines() if ln.startswith("attnseg_replica{"))
            seen[rid] = sum(float(ln.split()[-1]) for ln in text.splitlines()
                            if ln.startswith('attnseg_requests_total{path="/api/segment",status="200"}'))
            if len(seen) == 2:
                break
        assert set(seen) == replicas and all(v > 0 for v in seen.values()), seen

        victim = ray_processes("ServeReplica:attnseg")[0]
        killer = threading.Timer(1.0, victim.kill)
        killer.start()
        with ThreadPoolExecutor(8) as pool:
            during = list(pool.map(lambda i: _segment(url, data[i % 5]), range(40)))
        killer.join()
        failed = [a for a in during if a[0] != 200]
        print("failed while a replica died:", len(failed), [a[0] for a in failed])
        assert len(failed) <= 8  # at most the requests in flight at the death
        after = [_segment(url, data[i % 5]) for i in range(8)]
        assert [a[0] for a in after] == [200] * 8
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_an_actor_that_cannot_build_is_one_line(ray_local):
    """An error Ray does not retry (here: an actor whose set-up fails) arrives as its own last line, not Ray's
    remote traceback (`attnseg` prints it as one line, as other library errors)."""
    from attnseg.ray_engine import RayJobError, run_pool

    def setup():
        raise ValueError("cannot read checkpoint broken.pth: not a checkpoint")

    with pytest.raises(RayJobError, match=r"^--engine ray: ValueError: cannot read checkpoint broken.pth: not a "
                                          r"checkpoint$"):
        run_pool([{"i": 0}, {"i": 1}], setup, workers=1)
