"""The curl commands docs/serving.md gives, run as written against a live `attnseg serve` (one per endpoint and
input form): each exits 0 and answers what the page says."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import free_port, wait_until_up

pytest.importorskip("fastapi")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]


def commands() -> list[str]:
    text = (ROOT / "docs" / "serving.md").read_text()
    block = re.search(r"### With curl.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_documented_curl_commands_run_as_written(tmp_path):
    if not shutil.which("curl"):
        pytest.fail("curl is needed: apt-get install -y curl")
    shutil.copy(EXAMPLE, tmp_path / "street.png")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "attnseg.cli", "serve", "--port", str(port), "--backend", "eager",
                             "--model", "sanet-effnet-lite0-camvid", "--model", "lseg-effnet-lite0-camvid"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", proc)
        outs = {}
        for cmd in commands():
            r = subprocess.run(["bash", "-c", cmd], capture_output=True, cwd=tmp_path, timeout=120,
                               env={"URL": f"http://127.0.0.1:{port}", "PATH": "/usr/bin:/bin"})
            assert r.returncode == 0, (cmd, r.stderr)
            outs[cmd] = r.stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    answers = list(outs.values())
    assert [m["name"] for m in json.loads(answers[0])] == ["sanet-effnet-lite0-camvid", "lseg-effnet-lite0-camvid"]
    assert json.loads(answers[1])["max_pixels"] > 0
    with Image.open(tmp_path / "label.png") as im:
        assert im.mode == "P" and im.size == (480, 360)
    assert json.loads(answers[3])["classes"][0]["name"]
    assert {c["name"] for c in json.loads(answers[4])["classes"]} == {"road", "sky", "other"}
    assert json.loads(answers[5])["segments"]
    assert json.loads(answers[6])["width"] == 480
    assert {"label", "score", "mask"} == set(json.loads(answers[7])[0])
    assert b'"status":"ok"' in answers[8] and b'"status":"ready"' in answers[8]
    assert b'attnseg_requests_total{path="/api/segment",status="200"}' in answers[9]
