"""A client generated from the server's OpenAPI document (openapi-python-client) calls every input form of
/api/segment and the Hugging Face route against a live server, and gets what the hand-written requests get."""
import base64
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers import free_port, wait_until_up

pytest.importorskip("fastapi")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sorted((ROOT / "examples").glob("camvid_test_*.png"))[0]
SHIPPED = "sanet-effnet-lite0-camvid"


@pytest.mark.slow
@pytest.mark.e2e
def test_a_generated_client_calls_every_input_form(tmp_path, monkeypatch):
    generator = Path(sys.executable).with_name("openapi-python-client")
    if not generator.exists():
        pytest.fail("openapi-python-client is part of the dev extra: pip install -e '.[dev]'")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "attnseg.cli", "serve", "--port", str(port), "--backend", "eager",
                             "--model", SHIPPED], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/readyz", proc)
        (tmp_path / "spec.json").write_bytes(urllib.request.urlopen(url + "/openapi.json").read())
        (tmp_path / "config.yaml").write_text("post_hooks: []\n")
        r = subprocess.run([str(generator), "generate", "--path", "spec.json", "--config", "config.yaml",
                            "--output-path", "client"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert (tmp_path / "client" / "attnseg_client").is_dir(), r.stdout + r.stderr
        monkeypatch.syspath_prepend(str(tmp_path / "client"))
        from attnseg_client import Client
        from attnseg_client.api.default import hf_segment_model_hf_model_post as hf
        from attnseg_client.api.default import segment_api_segment_post as segment
        from attnseg_client.models import (SegmentApiSegmentPostFilesBody, SegmentApiSegmentPostFilesBodyFormat,
                                           SegmentApiSegmentPostFormat, SegmentApiSegmentPostJsonSegmentJSON)
        from attnseg_client.types import File

        client = Client(base_url=url, timeout=120)
        data = EXAMPLE.read_bytes()
        fmt = SegmentApiSegmentPostFormat("json")
        answers = [
            segment.sync(client=client, body=SegmentApiSegmentPostFilesBody(
                image=File(payload=io.BytesIO(data), file_name="street.png", mime_type="image/png"),
                format_=SegmentApiSegmentPostFilesBodyFormat("json"))),
            segment.sync(client=client, body=SegmentApiSegmentPostJsonSegmentJSON.from_dict(
                {"image": base64.b64encode(data).decode(), "format": "json"})),
            segment.sync(client=client, body=File(payload=io.BytesIO(data)), format_=fmt)]
        shares = [[(c.name, c.share) for c in a.classes] for a in answers]
        assert all(a.model == SHIPPED for a in answers) and shares[0] == shares[1] == shares[2] and shares[0]
        elements = hf.sync_detailed(model=SHIPPED, client=client, body=File(payload=io.BytesIO(data)))
        assert elements.status_code == 200 and {"label", "score", "mask"} == set(json.loads(elements.content)[0])
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
