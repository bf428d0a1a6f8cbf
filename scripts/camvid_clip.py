"""Write the CamVid test images (sorted: consecutive frames of each sequence, one per second of the
original drive) as an H.264 clip at 30 frames/s, 480x360: the video the README's frames/s were measured on.
    python scripts/camvid_clip.py ../shared/data/camvid camvid_test.mp4 [--frames N]"""
import argparse
from pathlib import Path

import av
import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("root")
ap.add_argument("out")
ap.add_argument("--frames", type=int, default=None)
args = ap.parse_args()
files = sorted((Path(args.root) / "test").glob("*.png"))[: args.frames]
with av.open(args.out, "w") as out:
    st = out.add_stream("libx264", rate=30)
    st.width, st.height, st.pix_fmt = 480, 360, "yuv420p"
    for f in files:
        for p in st.encode(av.VideoFrame.from_ndarray(np.array(Image.open(f).convert("RGB")), format="rgb24")):
            out.mux(p)
    for p in st.encode(None):
        out.mux(p)
print(f"wrote {args.out}: {len(files)} frames")
