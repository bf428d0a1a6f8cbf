"""Start `attnseg serve` (the given executable) on a free loopback port, segment an image through Hugging Face's
InferenceClient and through the JSON API, stop the server; exit 1 with the reason when anything fails.
Used by scripts/check_pythons.sh in each clean venv.

    python scripts/check_serve_client.py PATH/TO/attnseg IMAGE
"""
import json
import sys
import urllib.request
from pathlib import Path


def main(attnseg: str, image: str) -> int:
    from live_server import live_server

    try:
        with live_server(["--model", "sanet-effnet-lite0-camvid", "--backend", "eager"], executable=[attnseg]) as (url, _):
            from huggingface_hub import InferenceClient

            elements = InferenceClient(model=f"{url}/hf/sanet-effnet-lite0-camvid").image_segmentation(image)
            assert elements and all(e.mask.mode == "L" for e in elements), elements
            req = urllib.request.Request(url + "/api/segment?format=json", data=open(image, "rb").read(),
                                         headers={"Content-Type": "image/png"})
            body = json.load(urllib.request.urlopen(req, timeout=60))
            assert body["classes"], body
    except (RuntimeError, AssertionError, OSError) as e:
        print(f"{type(e).__name__}: {e}")
        return 1
    print(f"{len(elements)} segments; {body['classes'][0]['name']} largest")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(*sys.argv[1:3]))
