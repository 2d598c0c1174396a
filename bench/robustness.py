"""Robustness (quality) benchmark, issue 6: recall per transform and per algorithm at the product's
fixed thresholds, against the false-positive rate per query over >= 1M distractor hashes, with
PyPI `pdqhash` (Meta's C++ PDQ) and `imagehash` side by side on the same inputs.

    bench/setup                                   # prints the venv python
    cargo build --release --bin baken --example distractors
    /var/tmp/baken-bench-py/bin/python bench/robustness.py [--seed 1] [--distractors 1000000] [--quick]

Writes bench/results/robustness.csv, robustness_curve.csv, robustness.png and docs/robustness.md
(--quick writes all four into bench/results/quick/, not committed). Needs ../shared/corpus (read only; transformed
images go to a temporary directory, deleted at the end) and CARGO_TARGET_DIR if set.
"""
import argparse, collections, csv, json, os, platform, random, shutil, signal, subprocess, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BAKEN = os.path.join(TARGET, "release", "baken")
DISTRACTORS = os.path.join(TARGET, "release", "examples", "distractors")

# The product's defaults (src/store/hashtype.rs default_threshold, src/index MatchConfig).
PDQ_THRESHOLD = 31
BITS64_THRESHOLD = 10
PDQ_QUALITY_FLOOR = 50
# Range of the recall/FPR curves.
PDQ_CURVE = range(0, 97)
BITS64_CURVE = range(0, 25)

# Algorithms reported. kind: which hashes and distractor set it uses.
ALGOS = [
    # name, bits, source, dihedral
    ("Baken pdq", 256, "baken", False),
    ("Baken pdq (8 dihedrals)", 256, "baken", True),
    ("pdqhash pdq", 256, "pdqhash", False),
    ("pdqhash pdq (8 dihedrals)", 256, "pdqhash", True),
    ("Baken phash", 64, "baken", False),
    ("Baken dhash", 64, "baken", False),
    ("Baken ahash", 64, "baken", False),
    ("Baken blockhash", 64, "baken", False),
    ("imagehash phash", 64, "imagehash", False),
    ("imagehash dhash", 64, "imagehash", False),
    ("imagehash ahash", 64, "imagehash", False),
    # Issue 14: query-side candidates (border, frame, deskew) beside the product, and the peers
    # that address the same edits.
    ("Baken pdq + candidates", 256, "candidates", True),
    ("Baken pdq + candidates (views at 31)", 256, "candidates31", True),
    ("pytx unletterbox pdq", 256, "unletterbox", False),
    ("imagehash crop_resistant", 64, "crop_resistant", False),
]
# `baken hash --candidates` kinds, and how `baken match --candidates` treats them
# (src/index MatchConfig defaults): derived views match within min(list threshold, 24) and only
# at PDQ quality >= 60. In this benchmark's single distance column a candidate's distance is
# shifted by PDQ_THRESHOLD - CANDIDATE_THRESHOLD, so that "distance <= 31" is the product's rule
# for the whole image and its candidates alike (curves: whole <= t, candidates <= t - 7).
CANDIDATES = "border,frame,deskew"
CANDIDATE_THRESHOLD = 24
CANDIDATE_QUALITY_FLOOR = 60
# python-threatexchange's `--photo-preprocess=unletterbox` (threatexchange/content_type/
# preprocess/unletterboxing.py at facebook/ThreatExchange baefb4ed): each side's rows/columns
# are bars while every pixel has r, g, b <= T (the CLI's --black-threshold default 15); the crop
# is re-encoded in the source format (JPEG at Pillow's default quality 75) before hashing.
UNLETTERBOX_T = 15
# imagehash.crop_resistant_hash defaults (dhash per segment); ImageMultiHash.matches' default:
# one segment within 25 % of 64 bits.
CROP_RESISTANT_THRESHOLD = 16
PRODUCT = "Baken pdq (8 dihedrals)"  # what `baken match` does with a PDQ list

WATERMARK = "(c) sample photo 2026 - do not copy"


# --------------------------------------------------------------------------------------------
# Transforms. Each takes an RGB PIL image and a numpy Generator seeded by (seed, image, transform),
# so a transformed image does not depend on worker scheduling. Returns (image, "PNG"|"JPEG", opts).

def _transforms():
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    def jpeg(q):
        return lambda im, rng: (im, "JPEG", {"quality": q})

    def scale(im, w, h):
        return im.resize((max(1, round(w)), max(1, round(h))), Image.LANCZOS)

    def crop(frac):
        # Remove `frac` of each dimension, split between the two sides at random.
        def f(im, rng):
            w, h = im.size
            dw, dh = round(w * frac), round(h * frac)
            x, y = int(rng.integers(0, dw + 1)), int(rng.integers(0, dh + 1))
            return im.crop((x, y, x + w - dw, y + h - dh)), "PNG", {}
        return f

    def pad(frac):
        # A solid border adding `frac` to each dimension (half each side), black, white or grey.
        def f(im, rng):
            w, h = im.size
            colour = [(0, 0, 0), (255, 255, 255), (128, 128, 128)][int(rng.integers(0, 3))]
            pw, ph = round(w * frac / 2), round(h * frac / 2)
            out = Image.new("RGB", (w + 2 * pw, h + 2 * ph), colour)
            out.paste(im, (pw, ph))
            return out, "PNG", {}
        return f

    def rotate(deg):
        # About the centre, same canvas, black corners (bicubic).
        return lambda im, rng: (im.rotate(deg, resample=Image.BICUBIC, fillcolor=(0, 0, 0)), "PNG", {})

    def gamma(g):
        lut = [round(255 * (v / 255) ** g) for v in range(256)] * 3
        return lambda im, rng: (im.point(lut), "PNG", {})

    def noise(im, rng):
        a = np.asarray(im, dtype=np.float32)
        a = a + rng.normal(0.0, 10.0, a.shape)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)), "PNG", {}

    def watermark(im, rng):
        # Semi-opaque white text with a dark shadow, 1/14 of the height, at a random place in
        # the lower half; text over the picture, as stock-photo and social-media marks are.
        w, h = im.size
        size = max(10, h // 14)
        font = ImageFont.load_default(size=size)
        layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        tw = d.textlength(WATERMARK, font=font)
        x = int(rng.integers(0, max(1, int(w - tw)) + 1))
        y = int(rng.integers(h // 2, max(h // 2 + 1, h - size - 2)))
        d.text((x + 1, y + 1), WATERMARK, font=font, fill=(0, 0, 0, 140))
        d.text((x, y), WATERMARK, font=font, fill=(255, 255, 255, 180))
        return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB"), "PNG", {}

    def screenshot(im, rng):
        # The photo shown in a light UI: title bar with tabs, side panel, status bar; the
        # whole "screen" then rescaled as when a screenshot is shared (to 60-80 %).
        w, h = im.size
        cw, ch = round(w * 1.25), round(h * 1.45)
        canvas = Image.new("RGB", (cw, ch), (242, 242, 242))
        d = ImageDraw.Draw(canvas)
        bar = round(ch * 0.08)
        d.rectangle((0, 0, cw, bar), fill=(45, 45, 48))
        for i in range(int(rng.integers(2, 6))):
            x0 = round(cw * (0.02 + 0.16 * i))
            d.rectangle((x0, round(bar * 0.3), x0 + round(cw * 0.14), bar), fill=(80, 80, 86))
        d.rectangle((0, ch - round(ch * 0.05), cw, ch), fill=(220, 220, 224))
        side = cw - w - round(cw * 0.03)
        d.rectangle((0, bar, side - round(cw * 0.02), ch - round(ch * 0.05)), fill=(232, 232, 236))
        canvas.paste(im, (side, bar + round(ch * 0.04)))
        f = float(rng.uniform(0.6, 0.8))
        return scale(canvas, cw * f, ch * f), "PNG", {}

    def letterbox(aspect, coloured):
        # Fit into a canvas of another aspect (portrait 9:16 for a landscape photo, landscape
        # 16:9 for a portrait one), bars black or a random colour, as a phone story or a video
        # frame does.
        def f(im, rng):
            w, h = im.size
            a = aspect if w >= h else 1 / aspect
            cw, ch = (w, round(w / a)) if w / h > a else (round(h * a), h)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3)) if coloured else (0, 0, 0)
            out = Image.new("RGB", (max(cw, w), max(ch, h)), colour)
            out.paste(im, ((out.size[0] - w) // 2, (out.size[1] - h) // 2))
            return out, "PNG", {}
        return f

    def photo_border(im, rng):
        # The "blurred copy" background social apps add: the photo scaled to cover a square
        # canvas, blurred, with the photo itself at the centre.
        w, h = im.size
        side = max(w, h)
        # Blurred at <= 256 px and scaled up: the same soft background, without a radius-200
        # blur over a 36 MP canvas for the largest photos.
        small = max(1, min(side, 256))
        bg = im.resize((small, small), Image.BILINEAR).filter(ImageFilter.GaussianBlur(small / 30))
        bg = bg.resize((side, side), Image.BILINEAR)
        bg.paste(im, ((side - w) // 2, (side - h) // 2))
        return bg, "PNG", {}

    def meme(im, rng):
        # A white caption band above the photo (a fifth of its height) with black text.
        w, h = im.size
        band = max(12, h // 5)
        out = Image.new("RGB", (w, h + band), (255, 255, 255))
        out.paste(im, (0, band))
        d = ImageDraw.Draw(out)
        font = ImageFont.load_default(size=max(10, band // 3))
        d.text((w // 20, band // 3), "when the photo is known", font=font, fill=(0, 0, 0))
        return out, "PNG", {}

    def crop_resize(frac):
        def f(im, rng):
            c, _, _ = crop(frac)(im, rng)
            return c.resize(im.size, Image.LANCZOS), "PNG", {}
        return f

    T = Image.Transpose
    return [
        ("original (PNG)", lambda im, rng: (im, "PNG", {})),
        ("jpeg q95", jpeg(95)), ("jpeg q70", jpeg(70)), ("jpeg q50", jpeg(50)), ("jpeg q30", jpeg(30)),
        ("resize 0.5x", lambda im, rng: (scale(im, im.size[0] / 2, im.size[1] / 2), "PNG", {})),
        ("resize 256px", lambda im, rng: (scale(im, *(s * 256 / max(im.size) for s in im.size)), "PNG", {})),
        ("crop 5%", crop(0.05)), ("crop 10%", crop(0.10)), ("crop 20%", crop(0.20)), ("crop 30%", crop(0.30)),
        ("crop 10% + resize", crop_resize(0.10)),
        ("pad 10%", pad(0.10)), ("pad 20%", pad(0.20)),
        ("letterbox 9:16 black", letterbox(9 / 16, False)), ("letterbox 1:1 coloured", letterbox(1.0, True)),
        ("photo border", photo_border),
        ("rot90", lambda im, rng: (im.transpose(T.ROTATE_90), "PNG", {})),
        ("rot180", lambda im, rng: (im.transpose(T.ROTATE_180), "PNG", {})),
        ("rot270", lambda im, rng: (im.transpose(T.ROTATE_270), "PNG", {})),
        ("hflip", lambda im, rng: (im.transpose(T.FLIP_LEFT_RIGHT), "PNG", {})),
        ("vflip", lambda im, rng: (im.transpose(T.FLIP_TOP_BOTTOM), "PNG", {})),
        ("rotate +2°", rotate(2)), ("rotate -2°", rotate(-2)),
        ("rotate +4°", rotate(4)), ("rotate -4°", rotate(-4)),
        ("rotate +8°", rotate(8)), ("rotate -8°", rotate(-8)),
        ("greyscale", lambda im, rng: (im.convert("L"), "PNG", {})),
        ("gamma 0.7", gamma(0.7)), ("gamma 1.4", gamma(1.4)),
        ("blur σ=2", lambda im, rng: (im.filter(ImageFilter.GaussianBlur(2)), "PNG", {})),
        ("noise σ=10", noise),
        ("watermark text", watermark),
        ("aspect w×1.3", lambda im, rng: (scale(im, im.size[0] * 1.3, im.size[1]), "PNG", {})),
        ("screenshot", screenshot),
        ("meme caption", meme),
    ]


TRANSFORM_NAMES = [n for n, _ in _transforms()]


# --------------------------------------------------------------------------------------------
# Peer hashing (runs in worker processes).

def load_rgb(path):
    """Pillow decode as bench/pdq_reference.py (and HMA) do: alpha composited onto white, RGB."""
    from PIL import Image
    im = Image.open(path)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def unletterbox(im, fmt):
    """python-threatexchange's unletterbox, re-implemented from its source (see UNLETTERBOX_T)."""
    import io
    from PIL import Image
    black = (np.asarray(im.convert("RGB")) <= UNLETTERBOX_T).all(axis=2)
    rows, cols = black.all(axis=1), black.all(axis=0)
    if rows.all():
        return im  # pytx raises on an all-black image; nothing to hash differently
    top = int(np.argmin(rows)); bottom = int(np.argmin(rows[::-1]))
    left = int(np.argmin(cols)); right = int(np.argmin(cols[::-1]))
    w, h = im.size
    out = im.crop((left, top, w - right, h - bottom))
    buf = io.BytesIO()
    out.save(buf, format=fmt)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def peer_hashes(path, crop_resistant=True):
    import imagehash, pdqhash
    from PIL import Image
    im = load_rgb(path)
    dih, q = pdqhash.compute_dihedral(np.asarray(im))
    pack64 = lambda h: int.from_bytes(np.packbits(h.hash.flatten()).tobytes(), "big")
    ub, ubq = pdqhash.compute(np.asarray(unletterbox(im, Image.open(path).format or "PNG")))
    # crop_resistant_hash is pure Python and 3× the rest together: skipped where not compared.
    crh = imagehash.crop_resistant_hash(im) if crop_resistant else None
    return {
        "unletterbox": np.packbits(np.asarray(ub, dtype=np.uint8)).tobytes(),
        "unletterbox_quality": int(ubq),
        "crop_resistant": [pack64(s) for s in crh.segment_hashes] if crh else None,
        "pdq": b"".join(np.packbits(np.asarray(v, dtype=np.uint8)).tobytes() for v in dih),
        "pdq_quality": int(q),
        "phash": pack64(imagehash.phash(im)),
        "dhash": pack64(imagehash.dhash(im)),
        "ahash": pack64(imagehash.average_hash(im)),
    }


def work(job):
    """One corpus photo: write its transforms into `outdir`, hash original and transforms with
    the peers. Returns [(transform index or -1 for the original, path, peer hashes)]."""
    seed, idx, src, outdir, listed, crop_resistant = job
    out = [(-1, src, peer_hashes(src, crop_resistant))]
    im = load_rgb(src)
    for t, (_, fn) in enumerate(_transforms()):
        rng = np.random.default_rng([seed, idx, t])
        timg, fmt, opts = fn(im, rng)
        path = os.path.join(outdir, f"{idx:04d}_{t:02d}.{'jpg' if fmt == 'JPEG' else 'png'}")
        if fmt == "PNG":
            opts = {"compress_level": 1}  # lossless either way; level 1 is fast
        timg.save(path, fmt, **opts)
        # The distractor side's transforms are distractors for the PDQ rows; imagehash's
        # crop_resistant is compared with the distractor-side originals only.
        out.append((t, path, peer_hashes(path, crop_resistant=listed and crop_resistant)))
    return idx, out


# --------------------------------------------------------------------------------------------
# Baken hashing.

def baken_hash(paths):
    """`baken hash` on files, in argument order: {pdq: 8×32 bytes (dihedrals, original first),
    pdq_quality, phash, dhash, ahash, blockhash}, or None where the file failed."""
    out = []
    for i in range(0, len(paths), 400):
        chunk = paths[i:i + 400]
        r = subprocess.run([BAKEN, "hash", "--algo", "pdq,phash,dhash,ahash,blockhash", "--candidates",
                            CANDIDATES, "--threads", str(os.cpu_count() or 1)] + chunk,
                           capture_output=True, text=True)
        lines = r.stdout.strip().splitlines()
        if len(lines) != len(chunk):
            sys.exit(f"baken hash printed {len(lines)} lines for {len(chunk)} files:\n{r.stderr[-2000:]}")
        for line in lines:
            o = json.loads(line)
            if "pdq" not in o:
                out.append(None)
                continue
            out.append({
                "pdq": b"".join(bytes.fromhex(h) for h in o["pdq"]["dihedral"]),
                "pdq_quality": o["pdq"]["quality"],
                "candidates": [(c["name"], b"".join(bytes.fromhex(h) for h in c["pdq"]["dihedral"]),
                                c["pdq"]["quality"]) for c in o.get("candidates", [])],
                **{k: int(o[k], 16) for k in ("phash", "dhash", "ahash", "blockhash")},
            })
    return out


# --------------------------------------------------------------------------------------------
# Distances.

POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def ham64(a, b):
    """Hamming distances of uint64 arrays (broadcast)."""
    x = np.atleast_1d(np.bitwise_xor(a, b))
    return POP8[x.view(np.uint8).reshape(x.shape + (8,))].sum(axis=-1, dtype=np.int32)


def ham256(a, b):
    """a, b: (..., 32) uint8."""
    return POP8[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int32)


def nearest(db, queries, bits):
    """Distance from each query to its nearest database hash (exact: faiss IndexBinaryFlat).
    Identical query rows are searched once (Baken's and pdqhash's hashes mostly coincide)."""
    import faiss
    if bits == 64:
        db = np.ascontiguousarray(db.astype(">u8").view(np.uint8).reshape(-1, 8))
        queries = np.ascontiguousarray(queries.astype(">u8").view(np.uint8).reshape(-1, 8))
    uniq, inverse = np.unique(queries, axis=0, return_inverse=True)
    index = faiss.IndexBinaryFlat(bits)
    index.add(db)
    d, _ = index.search(np.ascontiguousarray(uniq), 1)
    return d[:, 0].astype(np.int32)[inverse.reshape(-1)]


# --------------------------------------------------------------------------------------------

def split(rows, seed):
    """Near-duplicate groups (a row without one is its own group) go wholly to one side."""
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r["neardup_group"] or "file:" + r["file"]].append(r)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    half = len(keys) // 2
    listed = [r for k in keys[:half] for r in groups[k]]
    distract = [r for k in keys[half:] for r in groups[k]]
    return sorted(listed, key=lambda r: r["file"]), sorted(distract, key=lambda r: r["file"]), len(keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--distractors", type=int, default=1_000_000,
                    help="total distractor hashes per algorithm (synthetic fill the rest)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 12+12 photos, 20k distractors")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--crop-resistant", action="store_true",
                    help="also imagehash's crop_resistant_hash (pure Python: ~4x the run time)")
    a = ap.parse_args()
    if not a.crop_resistant:
        ALGOS[:] = [x for x in ALGOS if x[2] != "crop_resistant"]
    if not os.path.isfile(os.path.join(CORPUS, "manifest.csv")):
        sys.exit(f"robustness: the shared corpus is missing ({os.path.normpath(CORPUS)}/manifest.csv); "
                 "this benchmark needs ../shared/corpus next to the repository")
    for b, how in ((BAKEN, "cargo build --release --bin baken"),
                   (DISTRACTORS, "cargo build --release --example distractors")):
        if not os.path.exists(b):
            sys.exit(f"robustness: {b} missing; build first: {how} (CARGO_TARGET_DIR={TARGET})")
    # A killed run (e.g. by bench/suite.py) still removes its temporary images (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.quick and a.distractors == 1_000_000:
        a.distractors = 20_000
    outdir = os.path.join(ROOT, "bench", "results", "quick" if a.quick else "")
    os.makedirs(outdir, exist_ok=True)
    t0 = time.time()

    rows = list(csv.DictReader(open(os.path.join(CORPUS, "manifest.csv"))))
    listed, distract, ngroups = split(rows, a.seed)
    if a.quick:
        listed, distract = listed[:12], distract[:12]
    print(f"robustness: {len(rows)} photos in {ngroups} near-duplicate groups -> {len(listed)} list-side, "
          f"{len(distract)} distractor-side (seed {a.seed})", flush=True)
    photos = listed + distract
    nlist = len(listed)
    names = TRANSFORM_NAMES
    nt = len(names)

    # ---- transform and hash, a chunk of photos at a time so the temporary directory stays small
    tmp = tempfile.mkdtemp(prefix="baken-robustness-")
    peer = {}   # (photo, t) -> peer hashes; t = -1 for the original file
    baken = {}  # (photo, t) -> Baken hashes
    try:
        # An executor, not multiprocessing.Pool: a worker that dies (OOM, a signal) raises
        # BrokenProcessPool here instead of hanging the run.
        with ProcessPoolExecutor(a.jobs, mp_context=get_context("fork")) as pool:
            chunk = 24
            for c0 in range(0, len(photos), chunk):
                jobs = [(a.seed, i, os.path.join(CORPUS, photos[i]["file"]), tmp, i < nlist, a.crop_resistant)
                        for i in range(c0, min(len(photos), c0 + chunk))]
                keys, paths = [], []
                for idx, res in pool.map(work, jobs):
                    for t, path, h in res:
                        peer[(idx, t)] = h
                        keys.append((idx, t))
                        paths.append(path)
                for k, h in zip(keys, baken_hash(paths)):
                    baken[k] = h
                for k, p in zip(keys, paths):
                    if k[1] >= 0:
                        os.remove(p)
                print(f"  hashed {min(len(photos), c0 + chunk)}/{len(photos)} photos × {nt} transforms "
                      f"({time.time() - t0:.0f} s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t_hash = time.time() - t0

    # ---- synthetic distractors (Rust example; tiles come from distractor-side photos only)
    corpus_distractors = len(distract) * (nt + 1)
    nsyn = max(0, a.distractors - corpus_distractors)
    with tempfile.TemporaryDirectory(prefix="baken-distractors-") as dtmp:
        plist = os.path.join(dtmp, "photos.txt")
        with open(plist, "w") as f:
            f.writelines(os.path.join(CORPUS, r["file"]) + "\n" for r in distract)
        binf = os.path.join(dtmp, "d.bin")
        r = subprocess.run([DISTRACTORS, "--seed", str(a.seed), "--count", str(nsyn), "--photos", plist,
                            "--out", binf], check=True, capture_output=True, text=True)
        syn_info = json.loads(r.stdout.strip().splitlines()[-1])
        rec = np.fromfile(binf, dtype=np.dtype([("pdq", "u1", 32), ("q", "u1"), ("h", ">u8", 4)]))
    print(f"robustness: {nsyn} synthetic distractors in {syn_info['seconds']} s {syn_info['kinds']}", flush=True)

    # ---- arrays
    def col(src, i, t, key):
        h = (baken if src == "baken" else peer).get((i, t))
        return None if h is None else h[key]

    missing = sum(1 for k in baken if baken[k] is None)
    # Queries: list-side transforms (including the lossless re-save as a sanity row).
    qkeys = [(i, t) for i in range(nlist) for t in range(nt)]
    dkeys = [(i, t) for i in range(nlist, len(photos)) for t in range(-1, nt)]

    def pdq_arr(src, keys):
        out = np.zeros((len(keys), 8, 32), np.uint8)
        qual = np.zeros(len(keys), np.int32)
        ok = np.ones(len(keys), bool)
        for n, (i, t) in enumerate(keys):
            v = col(src, i, t, "pdq")
            if v is None:
                ok[n] = False
                continue
            out[n] = np.frombuffer(v, np.uint8).reshape(8, 32)
            qual[n] = col(src, i, t, "pdq_quality")
        return out, qual, ok

    def h64_arr(src, key, keys):
        return np.array([col(src, i, t, key) or 0 for i, t in keys], dtype=np.uint64)

    qtrans = np.array([t for _, t in qkeys])
    rows_out, curves = [], []
    syn_pdq = rec["pdq"]
    syn64 = {k: rec["h"][:, j].astype(np.uint64) for j, k in enumerate(("phash", "dhash", "ahash", "blockhash"))}
    n_distractors = {}
    cand_matched = collections.Counter()  # (transform, candidate name) -> queries found by it
    for name, bits, src, dihedral in ALGOS:
        key = name.split()[-1] if bits == 64 else "pdq"
        if src in ("candidates", "candidates31"):
            q, qual, ok = pdq_arr("baken", qkeys)
            ent, _, eok = pdq_arr("baken", [(i, -1) for i, _ in qkeys])
            dq, _, dok = pdq_arr("baken", dkeys)
            db = np.concatenate([dq[dok, 0], syn_pdq])
            usable = ok & eok & (qual >= PDQ_QUALITY_FLOOR)
            dist = ham256(q, ent[:, :1]).min(axis=1)
            near = nearest(db, q.reshape(-1, 32), 256).reshape(len(qkeys), -1).min(axis=1)
            near_real = nearest(dq[dok, 0], q.reshape(-1, 32), 256).reshape(len(qkeys), -1).min(axis=1)
            dist, near, near_real = (np.where(usable, x, 10**6) for x in (dist, near, near_real))
            owner, cname, cq = [], [], []
            for n, (i, t) in enumerate(qkeys):
                for cn, hb, cqual in (baken.get((i, t)) or {}).get("candidates", []):
                    if cqual >= CANDIDATE_QUALITY_FLOOR and eok[n]:
                        owner.append(n); cname.append(cn); cq.append(np.frombuffer(hb, np.uint8).reshape(8, 32))
            if owner:
                owner = np.array(owner); cq = np.stack(cq)
                shift = PDQ_THRESHOLD - CANDIDATE_THRESHOLD if src == "candidates" else 0
                cd = ham256(cq, ent[owner, :1]).min(axis=1) + shift
                cn_ = nearest(db, cq.reshape(-1, 32), 256).reshape(len(owner), -1).min(axis=1) + shift
                cr_ = nearest(dq[dok, 0], cq.reshape(-1, 32), 256).reshape(len(owner), -1).min(axis=1) + shift
                for n, d, c in zip(owner, cd, cname):
                    if src == "candidates" and d <= PDQ_THRESHOLD and dist[n] > PDQ_THRESHOLD:
                        cand_matched[(names[qtrans[n]], c)] += 1
                np.minimum.at(dist, owner, cd)
                np.minimum.at(near, owner, cn_)
                np.minimum.at(near_real, owner, cr_)
            raw = np.where(ok, dist, -1)
            thr, curve = PDQ_THRESHOLD, PDQ_CURVE
        elif src == "crop_resistant":
            segs = lambda keys: [col("imagehash", i, t, "crop_resistant") or [] for i, t in keys]
            qs, es = segs(qkeys), segs([(i, -1) for i, _ in qkeys])
            ds = segs([(i, t) for i, t in dkeys if t == -1])
            ok = np.array([len(x) > 0 for x in qs]) & np.array([len(x) > 0 for x in es])
            dist = np.array([ham64(np.array(a, np.uint64)[:, None], np.array(b, np.uint64)[None, :]).min()
                             if len(a) and len(b) else 10**6 for a, b in zip(qs, es)])
            flat_d = np.array([h for x in ds for h in x], np.uint64)
            flat_q = np.array([h for x in qs for h in x], np.uint64)
            own = np.repeat(np.arange(len(qs)), [len(x) for x in qs])
            nd = nearest(flat_d, flat_q, 64)
            near = np.full(len(qs), 10**6)
            np.minimum.at(near, own, nd)
            near_real, db, qual, usable = near, flat_d, None, ok
            raw = np.where(ok, dist, -1)
            thr, curve = CROP_RESISTANT_THRESHOLD, BITS64_CURVE
        elif bits == 256:
            pk = "unletterbox" if src == "unletterbox" else "pdq"
            hsrc = "pdqhash" if src == "unletterbox" else src
            q, qual, ok = pdq_arr(hsrc, qkeys)
            if src == "unletterbox":
                q = np.stack([np.frombuffer(col("pdqhash", i, t, "unletterbox"), np.uint8) for i, t in qkeys])[:, None]
                qual = np.array([col("pdqhash", i, t, "unletterbox_quality") for i, t in qkeys])
            ent, _, eok = pdq_arr(hsrc, [(i, -1) for i, _ in qkeys])
            dq, _, dok = pdq_arr(hsrc, dkeys)
            db = np.concatenate([dq[dok, 0], syn_pdq])  # list entries are stored originals
            variants = q if dihedral else q[:, :1]
            dist = ham256(variants, ent[:, :1]).min(axis=1)
            near = nearest(db, variants.reshape(-1, 32), 256).reshape(len(qkeys), -1).min(axis=1)
            near_real = nearest(dq[dok, 0], variants.reshape(-1, 32), 256).reshape(len(qkeys), -1).min(axis=1)
            usable = ok & eok & (qual >= PDQ_QUALITY_FLOOR)  # below the floor: never matched
            raw = np.where(ok, dist, -1)
            thr, curve = PDQ_THRESHOLD, PDQ_CURVE
        else:
            q = h64_arr(src, key, qkeys)
            ent = h64_arr(src, key, [(i, -1) for i, _ in qkeys])
            ok = np.array([col(src, i, t, key) is not None for i, t in qkeys])
            dh = h64_arr(src, key, dkeys)
            # imagehash's functions differ from image_hasher's: Baken's synthetic set is not
            # theirs, so imagehash gets the corpus distractors only.
            db = np.concatenate([dh, syn64[key]]) if src == "baken" else dh
            dist = ham64(q, ent)
            near = nearest(db, q, 64)
            near_real = nearest(dh, q, 64)
            usable = ok & np.array([col(src, i, -1, key) is not None for i, _ in qkeys])
            qual = None
            raw = np.where(ok, dist, -1)
            thr, curve = BITS64_THRESHOLD, BITS64_CURVE
        n_distractors[name] = len(db)
        dist = np.where(usable, dist, 10**6)
        near = np.where(usable, near, 10**6)
        near_real = np.where(usable, near_real, 10**6)
        for t in range(nt):
            m = qtrans == t
            rows_out.append({
                "transform": names[t], "algorithm": name, "threshold": thr, "n": int(m.sum()),
                "recall": round(float((dist[m] <= thr).mean()), 4),
                "median_distance": float(np.median(raw[m][ok[m]])) if ok[m].any() else "",
                "below_quality_floor": int((qual[m] < PDQ_QUALITY_FLOOR).sum()) if qual is not None else "",
                "fpr": round(float((near[m] <= thr).mean()), 5),
                "distractors": len(db),
                # Against the real-photo distractors only (the same set for every algorithm).
                "fpr_real": round(float((near_real[m] <= thr).mean()), 5),
                "real_distractors": len(dkeys),
            })
        # Curves pool every transform except the lossless re-save.
        m = qtrans != 0
        for t in curve:
            curves.append({"algorithm": name, "t": t, "recall": round(float((dist[m] <= t).mean()), 5),
                           "fpr": round(float((near[m] <= t).mean()), 6)})
        print(f"  {name}: recall {np.mean(dist[m] <= thr):.3f}, FPR {np.mean(near[m] <= thr):.5f} "
              f"at t={thr} over {len(db)} distractors", flush=True)

    # ---- Baken vs pdqhash on the same files
    agree = {"files": 0, "identical": 0, "dihedrals_identical": 0, "quality_equal": 0, "max_distance": 0,
             "by_transform": collections.Counter()}
    for k in list(peer):
        b, p = baken.get(k), peer[k]
        if b is None:
            continue
        agree["files"] += 1
        bh, ph = np.frombuffer(b["pdq"], np.uint8).reshape(8, 32), np.frombuffer(p["pdq"], np.uint8).reshape(8, 32)
        d = int(ham256(bh[0], ph[0]))
        agree["identical"] += d == 0
        agree["dihedrals_identical"] += bool((bh == ph).all())
        agree["quality_equal"] += b["pdq_quality"] == p["pdq_quality"]
        agree["max_distance"] = max(agree["max_distance"], d)
        if d or b["pdq_quality"] != p["pdq_quality"]:
            agree["by_transform"]["original file" if k[1] < 0 else names[k[1]]] += 1
    total = time.time() - t0

    # ---- outputs
    res_csv = os.path.join(outdir, "robustness.csv")
    with open(res_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows_out[0]))
        w.writeheader()
        w.writerows(rows_out)
    curve_csv = os.path.join(outdir, "robustness_curve.csv")
    with open(curve_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(curves[0]))
        w.writeheader()
        w.writerows(curves)
    png = os.path.join(outdir, "robustness.png")
    plot(curves, png, len(qkeys) - nlist)
    info = {
        "seed": a.seed, "quick": a.quick, "photos": len(rows), "groups": ngroups, "listed": nlist,
        "distract": len(distract), "transforms": nt, "queries": len(qkeys), "synthetic": nsyn,
        "syn_info": syn_info, "n_distractors": n_distractors, "agree": agree, "baken_failed": missing,
        "t_hash": t_hash, "total": total, "cand_matched": cand_matched,
    }
    # The smoke run writes its doc next to its results (not committed), through the same code.
    doc = os.path.join(outdir, "robustness.md") if a.quick else os.path.join(ROOT, "docs", "robustness.md")
    write_doc(doc, rows_out, curves, info, a)
    written = [res_csv, curve_csv, png, doc]
    print(f"robustness: done in {total:.0f} s; wrote " + ", ".join(os.path.relpath(p, ROOT) for p in written))


def plot(curves, path, nq):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    floor = 0.5 / nq  # FPR 0 cannot sit on a log axis: drawn at half of one query
    by = collections.defaultdict(list)
    for c in curves:
        by[c["algorithm"]].append(c)
    for ax, bits in zip(axes, (256, 64)):
        for name, b, src, dih in ALGOS:
            if b != bits:
                continue
            cs = by[name]
            x = [max(c["fpr"], floor) for c in cs]
            y = [c["recall"] for c in cs]
            style = "-" if src == "baken" else "--"
            line, = ax.plot(x, y, style, label=name, lw=1.4)
            thr = CROP_RESISTANT_THRESHOLD if src == "crop_resistant" else (
                PDQ_THRESHOLD if bits == 256 else BITS64_THRESHOLD)
            fixed = next(c for c in cs if c["t"] == thr)
            ax.plot([max(fixed["fpr"], floor)], [fixed["recall"]], "o", color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlim(floor / 1.5, 1.05)
        ax.set_ylim(0, 1.01)
        ax.axvline(floor, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(f"false-positive rate per query (log; FPR 0 drawn at {floor:.1e})")
        ax.set_ylabel("recall (all transforms pooled)")
        ax.set_title("PDQ, 256 bit (dot: t=31)" if bits == 256 else "64-bit hashes (dot: t=10)")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def findings(w, by, curves, info):
    """Headline sentences computed from this run's numbers."""
    names = TRANSFORM_NAMES[1:]
    n = by[(names[0], PRODUCT)]["n"]
    rec = lambda alg: np.mean([by[(t, alg)]["recall"] for t in names])
    fp = {t: round(by[(t, PRODUCT)]["fpr"] * n) for t in names}
    total_fp = sum(fp.values())
    strong = [t for t in names if by[(t, PRODUCT)]["recall"] >= 0.9]
    weak = [t for t in names if by[(t, PRODUCT)]["recall"] < 0.1]
    below = sum(by[(t, "Baken pdq")]["below_quality_floor"] for t in names)
    ag = info["agree"]
    w("## Findings")
    w("")
    w(f"* **The product (PDQ, 8 dihedrals, t={PDQ_THRESHOLD})** finds ≥ 90 % of the queries for "
      f"{len(strong)} of {len(names)} transforms ({', '.join(strong)}) and < 10 % for "
      f"{', '.join(weak)}. PDQ is a global hash of the whole frame: anything that moves the "
      "content inside the frame (crops, borders, small rotations, a screenshot's UI) breaks it.")
    w(f"* **Dihedrals** raise PDQ's mean recall from {pct(rec('Baken pdq'))} % to {pct(rec(PRODUCT))} % "
      "(exact rotations and flips become findable) and its FPR per query from "
      f"{np.mean([by[(t, 'Baken pdq')]['fpr'] for t in names]):.5f} to "
      f"{np.mean([by[(t, PRODUCT)]['fpr'] for t in names]):.5f}: 8 hashes per query are 8 chances "
      "of a false match.")
    tops = sorted((v, t) for t, v in fp.items() if v)[::-1]
    if total_fp:
        w(f"* **False positives of the product**: {total_fp} of {n * len(names):,} queries over "
          f"{info['n_distractors'][PRODUCT]:,} distractors; by transform: "
          + ", ".join(f"{t} {v}" for v, t in tops) + ". Queries that carry artificial structure "
          "shared with distractors (the same UI canvas in a distractor-side screenshot) are the "
          "ones that collide.")
    else:
        w(f"* **No false positive of the product** over {n * len(names):,} queries and "
          f"{info['n_distractors'][PRODUCT]:,} distractors.")
    base = by[(TRANSFORM_NAMES[0], "Baken pdq")]["below_quality_floor"]
    more = [f"{t} {by[(t, 'Baken pdq')]['below_quality_floor']}" for t in names
            if by[(t, "Baken pdq")]["below_quality_floor"] > base]
    w(f"* **Quality floor**: {below} of {n * len(names):,} transformed queries have a Baken PDQ "
      f"quality below {PDQ_QUALITY_FLOOR} and are not matched by the product (counted as misses): "
      f"{base} of the {n} list photos are below it already (lossless re-save)"
      + (f"; transforms that flatten the image add more ({', '.join(more)})." if more else "."))
    # Where would each 64-bit hash have to sit for an FPR of at most 1 % per query?
    parts = []
    for alg in ("Baken phash", "Baken dhash", "Baken ahash", "Baken blockhash"):
        fixed = by[(names[0], alg)]
        ok = [c for c in curves if c["algorithm"] == alg and c["fpr"] <= 0.01]
        best = max(ok, key=lambda c: c["t"]) if ok else None
        parts.append(f"{alg.split()[1]} {np.mean([by[(t, alg)]['fpr'] for t in names]):.2f} at "
                     f"t={fixed['threshold']}" + (f" (FPR ≤ 1 % needs t ≤ {best['t']}, recall "
                                                  f"{pct(best['recall'])} %)" if best else " (no t reaches FPR ≤ 1 %)"))
    w(f"* **64-bit hashes against {info['n_distractors']['Baken phash']:,} distractors** at "
      f"t={BITS64_THRESHOLD}: FPR per query "
      + "; ".join(parts) + ". They are more tolerant of crops, borders and ±4° than PDQ, but 64 bits "
      "separate a query from many entries poorly: the FPR grows with the list size.")
    w(f"* **Baken's PDQ equals `pdqhash`** on all {ag['files']:,} files (originals and transforms): "
      f"{ag['identical']:,} identical hashes, {ag['dihedrals_identical']:,} identical dihedral sets, "
      f"{ag['quality_equal']:,} equal qualities, so the Baken and `pdqhash` rows coincide. Baken's "
      "pHash/dHash/aHash (`image_hasher`) and `imagehash` are different functions with similar "
      "recall.")
    w("")
    cand_findings(w, by, info)


# The edits issue 14 targets, grouped as its "must show" names them.
ISSUE14_GROUPS = [
    ("padding / letterbox", ["pad 10%", "pad 20%", "letterbox 9:16 black", "letterbox 1:1 coloured"]),
    ("screenshot / UI framing", ["screenshot", "meme caption", "photo border"]),
    ("±2° rotation", ["rotate +2°", "rotate -2°"]),
    ("±4° rotation", ["rotate +4°", "rotate -4°"]),
    ("±8° rotation", ["rotate +8°", "rotate -8°"]),
    ("5 % crops", ["crop 5%"]),
    ("10–30 % crops", ["crop 10%", "crop 20%", "crop 30%", "crop 10% + resize"]),
]
CAND = "Baken pdq + candidates"
CAND31 = "Baken pdq + candidates (views at 31)"


def cand_findings(w, by, info):
    names = TRANSFORM_NAMES[1:]
    fpr = lambda alg: np.mean([by[(t, alg)]["fpr"] for t in names])
    fpr_real = lambda alg: np.mean([by[(t, alg)]["fpr_real"] for t in names])
    w("## Query-side candidates (issue 14)")
    w("")
    w(f"`{CAND}` is `baken match --candidates {CANDIDATES}` with the defaults: the image's 8 dihedral "
      f"PDQs within {PDQ_THRESHOLD}, and each derived view (border removed, frame removed, "
      f"deskewed; at most 5) with its 8 dihedrals within {CANDIDATE_THRESHOLD}, at PDQ quality ≥ "
      f"{CANDIDATE_QUALITY_FLOOR}. `{CAND31}` matches the views within {PDQ_THRESHOLD} too, to show "
      "what the stricter view threshold costs and buys. `pytx unletterbox pdq` is "
      f"python-threatexchange's `--photo-preprocess=unletterbox` (black bars only, r, g, b ≤ "
      f"{UNLETTERBOX_T}, every pixel of a line), then PDQ; `imagehash crop_resistant` is "
      "`crop_resistant_hash` (dhash of each bright/dark segment's box) with `ImageMultiHash.matches`' "
      f"default (one segment within {CROP_RESISTANT_THRESHOLD} of 64 bits), against the real-photo "
      "distractor originals only; it is pure Python (~4× the run time) and runs with "
      "`--crop-resistant` only" + ("." if "imagehash crop_resistant" in algs else
                                   " (not in this run: see the note below the table)."))
    w("")
    algs = [x for x in [PRODUCT, CAND, CAND31, "pytx unletterbox pdq", "imagehash crop_resistant"]
            if any(n == x for n, *_ in ALGOS)]
    w("| edits | " + " | ".join(algs) + " |")
    w("|---|" + "---|" * len(algs))
    for g, ts in ISSUE14_GROUPS:
        w(f"| {g} ({', '.join(ts)}) | " + " | ".join(
            pct(np.mean([by[(t, a)]["recall"] for t in ts])) for a in algs) + " |")
    w("| FPR per query, all distractors | " + " | ".join(f"{fpr(a):.5f}" for a in algs) + " |")
    w("| FPR per query, real photos only | " + " | ".join(f"{fpr_real(a):.5f}" for a in algs) + " |")
    w("")
    cm = info.get("cand_matched") or {}
    if cm:
        kinds = collections.Counter()
        for (t, c), v in cm.items():
            kinds[c] += v
        w(f"Queries the image's own PDQ missed and a view found (`{CAND}`), by view: "
          + ", ".join(f"{c} {v}" for c, v in kinds.most_common()) + "; by transform: "
          + ", ".join(f"{t} {v}" for (t, c), v in sorted(cm.items(), key=lambda x: -x[1])[:12]) + ".")
        w("")


def pct(x):
    return f"{100 * x:.1f}"


def write_doc(path, rows_out, curves, info, a):
    """docs/robustness.md: everything from this run's numbers; only the "Run" line changes
    between two runs with the same seed."""
    by = {(r["transform"], r["algorithm"]): r for r in rows_out}
    names = TRANSFORM_NAMES
    algos = [n for n, *_ in ALGOS]
    nq = info["queries"] // len(names)
    short = lambda n: n.replace("imagehash ", "ih ").replace(" (8 dihedrals)", " 8d")
    pooled = lambda alg, key: np.mean([by[(t, alg)][key] for t in names[1:]])
    ag = info["agree"]
    syn = info["syn_info"]
    cmd = "bench/setup && cargo build --release --bin baken --example distractors && " \
          f"/var/tmp/baken-bench-py/bin/python bench/robustness.py --seed {a.seed} --distractors {a.distractors}"
    L = []
    w = L.append
    w("# Robustness (quality) benchmark")
    w("")
    w("Generated by `bench/robustness.py` (issue 6); do not edit by hand, re-run it. The numbers are "
      "a function of the seed, the corpus and the pinned peers (`bench/requirements.txt`): a re-run "
      "reproduces them; only the Run line below changes.")
    w("")
    w("```")
    w(cmd)
    w("```")
    w("")
    w(f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu_name()}, "
      f"{os.cpu_count()} cores, {info['total'] / 60:.1f} min ({info['t_hash'] / 60:.1f} min transforming and hashing).")
    w("")
    w(f"Seed {a.seed}. {info['photos']} corpus photos in {info['groups']} near-duplicate groups: "
      f"{info['listed']} photos on the known-list side, {info['distract']} on the distractor side. "
      f"{len(names)} transforms → {info['queries']} queries ({nq} per transform). "
      f"Fixed thresholds: PDQ ≤ {PDQ_THRESHOLD} of 256 bits, 64-bit hashes ≤ {BITS64_THRESHOLD}; "
      f"PDQ quality floor {PDQ_QUALITY_FLOOR}. Raw numbers: [robustness.csv](../bench/results/robustness.csv), "
      "[robustness_curve.csv](../bench/results/robustness_curve.csv).")
    w("")
    w("## Summary at the fixed thresholds")
    w("")
    w("Recall is the mean over the transforms (the lossless re-save excluded); FPR per query is the "
      "fraction of the same queries that come within the threshold of any distractor: of all "
      f"distractors, and of the {info['distract'] * (len(names) + 1):,} real-photo "
      "distractors only (the distractor-side originals and their transforms, the same photos for "
      "every algorithm, so that column compares all rows).")
    w("")
    w("| algorithm | threshold | mean recall % | transforms with recall ≥ 90 % | FPR per query | distractors | FPR, real photos only |")
    w("|---|---|---|---|---|---|---|")
    for alg in algos:
        r0 = by[(names[0], alg)]
        good = sum(by[(t, alg)]["recall"] >= 0.9 for t in names[1:])
        w(f"| {alg}{' **(product)**' if alg == PRODUCT else ''} | {r0['threshold']} | {pct(pooled(alg, 'recall'))} | "
          f"{good} of {len(names) - 1} | {pooled(alg, 'fpr'):.5f} | {r0['distractors']:,} | {pooled(alg, 'fpr_real'):.5f} |")
    w("")
    w("The imagehash rows have no synthetic distractors (see Distractors): their FPR is over the "
      "real photos only.")
    w("")
    findings(w, by, curves, info)
    w("## Recall per transform (%)")
    w("")
    w("`8d` = the query's 8 dihedral hashes (min distance), as `baken match` does for PDQ; `ih` = "
      f"Python `imagehash`. Last column: queries whose Baken PDQ quality is below {PDQ_QUALITY_FLOOR} "
      "(not matched by the product; counted as misses in every PDQ column).")
    w("")
    w("| transform | " + " | ".join(short(x) for x in algos) + " | PDQ q<50 |")
    w("|---|" + "---|" * (len(algos) + 1))
    for t in names:
        cells = [pct(by[(t, alg)]["recall"]) for alg in algos]
        w(f"| {t} | " + " | ".join(cells) + f" | {by[(t, 'Baken pdq')]['below_quality_floor']} |")
    w("| **mean (excl. re-save)** | " + " | ".join(f"**{pct(pooled(alg, 'recall'))}**" for alg in algos) + " | |")
    w("")
    w("## False positives per transform")
    w("")
    w("FPR per query at the fixed thresholds (fraction of that transform's queries within the "
      "threshold of any distractor). Shared artificial structure (borders, UI chrome) moves queries "
      "towards distractors that carry the same structure.")
    w("")
    balgos = [x for x in algos if not x.startswith("imagehash")]
    w("| transform | " + " | ".join(short(x) for x in balgos) + " |")
    w("|---|" + "---|" * len(balgos))
    for t in names:
        w(f"| {t} | " + " | ".join(f"{by[(t, alg)]['fpr']:.4f}" for alg in balgos) + " |")
    w("")
    w("## Recall vs false-positive rate")
    w("")
    w("![recall vs FPR](../bench/results/robustness.png)")
    w("")
    w(f"Each curve sweeps the threshold (PDQ 0–{PDQ_CURVE[-1]}, 64-bit 0–{BITS64_CURVE[-1]}) over all "
      "queries of all transforms pooled (re-save excluded); the dot is the product's fixed threshold. "
      "Solid: Baken, dashed: peers.")
    w("")
    w("## Baken vs pdqhash on the same files")
    w("")
    w(f"Every file hashed here (the corpus originals and every transformed image, both sides: "
      f"{ag['files']:,} files) was hashed by Baken (`baken hash`, PDQ full mode, libjpeg-turbo / "
      f"`image` decoders) and by PyPI `pdqhash` fed by Pillow: "
      f"{ag['identical']:,} PDQ hashes bit-identical, {ag['dihedrals_identical']:,} with all 8 dihedrals "
      f"identical, {ag['quality_equal']:,} equal qualities; largest distance {ag['max_distance']}.")
    if ag["by_transform"]:
        w("Files that differ, by transform: " + ", ".join(f"{k} {v}" for k, v in sorted(ag["by_transform"].items())) + ".")
    if info["baken_failed"]:
        w(f"`baken hash` failed on {info['baken_failed']} files (counted as misses).")
    w("")
    w("## Method")
    w("")
    w(f"* **Split.** Rows of `manifest.csv` sharing a `neardup_group` form one group; a row without "
      f"one is its own group. The {info['groups']} groups are sorted, shuffled with Python's "
      f"`random.Random({a.seed})` and halved: the first half is the known-list side, the rest the "
      "distractor side, so no near-duplicate straddles the two.")
    w("* **List and queries.** A list-side photo's original file is the list entry (as `baken "
      "lists add` would hash it); its transforms are the queries. A query counts as found when it "
      "is within the threshold of its own original (strict: other entries do not count). Every "
      "algorithm hashes the same files.")
    w("* **Matching as the product does it.** `baken match` sends PDQ queries with their 8 dihedral "
      "hashes (rotations and flips, `src/cli/lists.rs` `query_from`) and takes a match if any is "
      f"within {PDQ_THRESHOLD} (`src/index/mod.rs`); queries with PDQ quality under "
      f"{PDQ_QUALITY_FLOOR} are not matched at all (`MatchConfig::pdq_quality_floor`). pHash, dHash, "
      f"aHash and blockhash queries are one hash each, **no dihedrals**, threshold {BITS64_THRESHOLD} "
      "of 64 (`HashType::default_threshold`). Rows `… pdq` use the query's own hash only, rows "
      "`… pdq (8 dihedrals)` the product's minimum over the 8; the quality floor applies to both "
      "(each implementation's own quality).")
    w("* **Peers.** PyPI `pdqhash` (Meta's C++ PDQ; `compute_dihedral` on Pillow's RGB decode, "
      "alpha composited onto white as Baken does) and Python `imagehash` (`phash`, `dhash`, "
      "`average_hash`, 8×8) on the same files. `imagehash` and `image_hasher` (Baken) implement "
      "pHash/dHash/aHash differently (resize filter, DCT size, bit order), so their hashes are "
      "not interchangeable, only their robustness is compared.")
    w("* **FPR per query.** Each query's nearest distractor is found exactly (faiss "
      "`IndexBinaryFlat`, k=1; for the 8-dihedral rows the minimum over the 8 hashes), which gives "
      "FPR(t) for every t at once. A query from the list side has no true match among the "
      "distractors, so any distractor within the threshold is a false positive.")
    w("")
    w("### Transforms")
    w("")
    w(f"Pillow {__import__('PIL').__version__}, numpy generator seeded by (seed, photo, transform). "
      "All outputs are lossless PNG except the JPEG rows. Sources are decoded as above (alpha on white, RGB).")
    w("")
    w("| transform | what exactly |")
    w("|---|---|")
    for t, d in [
        ("original (PNG)", "lossless re-save: a sanity row (PNG files differ from the original bytes, pixels do not)"),
        ("jpeg qN", "Pillow JPEG at quality N (4:2:0)"),
        ("resize 0.5x", "both sides halved, Lanczos"),
        ("resize 256px", "longer side to 256 px (up or down), aspect kept, Lanczos"),
        ("crop N%", "N % of the width and of the height removed, split between the two sides at random"),
        ("pad N%", "solid border adding N % to each dimension (half each side), black, white or grey at random"),
        ("rot90/180/270, hflip, vflip", "exact transposes (rot90 is counter-clockwise)"),
        ("rotate ±4°", "bicubic rotation about the centre, same canvas, black corners"),
        ("greyscale", "Pillow `L` (ITU-R 601 luma), saved as a 1-channel PNG"),
        ("gamma 0.7 / 1.4", "255·(v/255)^γ per channel"),
        ("blur σ=2", "Pillow GaussianBlur(2) (σ = 2 px, box-filter approximation)"),
        ("noise σ=10", "additive Gaussian noise, σ = 10 of 255, per channel, clipped"),
        ("watermark text", f"\"{WATERMARK}\", Pillow's default font at 1/14 of the height, white at 70 % "
                           "opacity with a dark shadow, random place in the lower half"),
        ("aspect w×1.3", "width stretched by 1.3, height kept, Lanczos"),
        ("screenshot", "photo placed in a light UI canvas 1.25× wide and 1.45× high (dark title bar with "
                       "2–5 tabs, side panel, status bar), then the whole canvas rescaled to 60–80 %"),
    ]:
        w(f"| {t} | {d} |")
    w("")
    w("### Distractors")
    w("")
    kinds = ", ".join(f"{k} {v:,}" for k, v in syn["kinds"].items())
    w(f"Per algorithm {info['n_distractors'][PRODUCT]:,} hashes (one per image; list entries are stored "
      "originals, so distractors have no dihedral variants):")
    w("")
    w(f"* the {info['distract']} distractor-side originals and their {len(names)} transforms "
      f"({info['distract'] * (len(names) + 1):,} real-photo hashes: near-duplicate variants are "
      "where real collisions cluster);")
    w(f"* {info['synthetic']:,} synthetic images made and hashed in memory by "
      f"`examples/distractors.rs` (seed {a.seed}; {kinds}): random crops (15–100 % of each side) of "
      "distractor-side photos rescaled to 64–128 px with random mirror, gain and offset; 2×1/1×2/2×2 "
      "collages of such crops; 1/f^β value noise (β 1–2.5) in colour; gradients with random "
      "rectangles and ellipses. Hashed by Baken's own PDQ and `image_hasher` code on the pixels, "
      "exactly as `baken hash` hashes a decoded image.")
    w("")
    w("For the `pdqhash` rows the corpus part is hashed by `pdqhash` and the synthetic part is "
      "Baken's (the two are bit-identical on the same pixels, see above). For the `imagehash` rows "
      "only the corpus part exists (`imagehash` is a different function and too slow in Python for "
      "1M images), so their FPR is over "
      f"{info['n_distractors']['imagehash phash']:,} hashes and not comparable.")
    w("")
    w("## Caveats")
    w("")
    w(f"* {nq} photos per transform: one photo is {100 / max(1, nq):.1f} points of recall. The corpus is "
      "small, mixed (photos, a few drawings and textures) and mostly under 1 MP.")
    w("* The corpus holds many astronomy photos (a bright object centred on black) and other "
      "same-source series; they are alike to the 64-bit hashes (several list-side originals have a "
      "distractor-side original within 10 bits of pHash), which is part of why those rows' "
      "real-photo FPR is high.")
    w("* The synthetic distractors are an approximation of real traffic. Photo crops and collages "
      "come from only the distractor-side photos, so they repeat their content; procedural "
      "images are simpler than photos. Real deployments should measure FPR on their own benign "
      "traffic; these FPRs are indicative, not a guarantee. Uniform random hashes were not used: "
      "random 256-bit hashes are ~128 bits apart and never produce a PDQ false positive.")
    w("* FPR counts any distractor within the threshold, at the query level; a list of N entries "
      "behaves like a distractor set of N, so FPR grows with list size.")
    w("* Transforms are applied one at a time; real re-uploads often stack them (e.g. resize + JPEG).")
    w("")
    with open(path, "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
