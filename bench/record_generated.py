"""Record reference PDQ values for tests/pdq_generated.rs from PyPI `pdqhash` (Meta's C++).

python3 bench/record_generated.py DIR   # DIR holds the PNGs the test dumps
Prints the RECORDED table rows.
"""
import glob, os, sys

import numpy as np
import pdqhash
from PIL import Image


def hexes(vecs):
    return [hex(int("".join(str(int(b)) for b in v), 2))[2:].zfill(64) for v in vecs]


def ref512(a):
    h, w = a.shape[:2]
    if h <= 512 and w <= 512:
        return a
    rows = (np.arange(512) * h) // 512
    cols = (np.arange(512) * w) // 512
    return np.ascontiguousarray(a[rows][:, cols])


for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.png"))):
    a = np.asarray(Image.open(path).convert("RGB"))
    name = os.path.basename(path)[:-4]
    for mode, arr in (("full", a), ("ref512", ref512(a))):
        dih, q = pdqhash.compute_dihedral(arr)
        print(f"{name}:{mode},{q},{';'.join(hexes(dih))}")
