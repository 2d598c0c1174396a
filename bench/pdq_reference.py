"""Reference side of the PDQ side-by-side: PyPI `pdqhash` (Meta's C++ core) fed by Pillow's
decoder (libjpeg-turbo), the way python-threatexchange / HMA hash an image. Single thread.
Inputs are read into memory first; each pass decodes and hashes every file. Prints one JSON line.

python3 bench/pdq_reference.py --mode full|ref512 [--passes 5] FILES...
"""
import argparse, io, json, time

import numpy as np
import pdqhash
from PIL import Image


def load(data, mode):
    im = Image.open(io.BytesIO(data))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    a = np.asarray(im.convert("RGB"))
    h, w = a.shape[:2]
    if mode == "ref512" and (w > 512 or h > 512):
        # The C++ tool's squash: source index floor(i * N / 512).
        a = np.ascontiguousarray(a[(np.arange(512) * h) // 512][:, (np.arange(512) * w) // 512])
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="full", choices=["full", "ref512"])
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--dihedral", action="store_true", help="compute_dihedral (8 hashes) instead of compute")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    blobs = [open(f, "rb").read() for f in a.files]
    fn = pdqhash.compute_dihedral if a.dihedral else pdqhash.compute
    for b in blobs:  # warm-up
        fn(load(b, a.mode))
    times = []
    for _ in range(a.passes):
        t = time.perf_counter()
        for b in blobs:
            fn(load(b, a.mode))
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"impl": "pdqhash", "mode": a.mode, "dihedral": a.dihedral, "files": len(blobs),
                      "median_pass_s": round(med, 4), "images_per_s": round(len(blobs) / med, 2)}))


if __name__ == "__main__":
    main()
