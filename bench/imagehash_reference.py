"""Peer side of the pHash/dHash/aHash throughput comparison: PyPI `imagehash` fed by Pillow, the
way its users call it (`imagehash.phash(Image.open(f))`). Single thread, decode included. Inputs
are read into memory first; each pass decodes and hashes every file. Prints one JSON line, like
examples/throughput.rs and bench/pdq_reference.py.

python3 bench/imagehash_reference.py --algo phash|dhash|ahash [--passes 5] FILES...
"""
import argparse, io, json, time

import imagehash
from PIL import Image

ALGOS = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--algo", required=True, choices=sorted(ALGOS))
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    fn = ALGOS[a.algo]
    blobs = [open(f, "rb").read() for f in a.files]

    def one_pass():
        for b in blobs:
            # 64-bit hashes, imagehash's defaults (Baken's image_hasher configuration is 64-bit too).
            fn(Image.open(io.BytesIO(b)))

    one_pass()  # warm-up
    times = []
    for _ in range(a.passes):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"impl": "imagehash", "algo": a.algo, "files": len(blobs), "passes": a.passes,
                      "median_pass_s": round(med, 4), "images_per_s": round(len(blobs) / med, 2)}))


if __name__ == "__main__":
    main()
