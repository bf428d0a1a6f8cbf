"""Start `attnseg serve` (the given executable) on a free loopback port, segment an image through Hugging Face's
InferenceClient and through the JSON API, stop the server; exit 1 with the reason when anything fails.
Used by scripts/check_pythons.sh in each clean venv.

    python scripts/check_serve_client.py PATH/TO/attnseg IMAGE
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request


def main(attnseg: str, image: str) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([attnseg, "serve", "--model", "sanet-effnet-lite0-camvid", "--backend", "eager",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/readyz", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    print("server exited: " + proc.stderr.read()[-1000:])
                    return 1
                time.sleep(0.5)
        from huggingface_hub import InferenceClient

        elements = InferenceClient(model=f"{url}/hf/sanet-effnet-lite0-camvid").image_segmentation(image)
        assert elements and all(e.mask.mode == "L" for e in elements), elements
        req = urllib.request.Request(url + "/api/segment?format=json", data=open(image, "rb").read(),
                                     headers={"Content-Type": "image/png"})
        body = json.load(urllib.request.urlopen(req, timeout=60))
        assert body["classes"], body
        print(f"{len(elements)} segments; {body['classes'][0]['name']} largest")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
