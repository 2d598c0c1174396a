#!/usr/bin/env python3
"""Border-removal candidates (issue 14), a first measurement ahead of bench/robustness.py rows.

Half the shared corpus (even manifest rows) is listed by PDQ; every listed photo and every other
photo is put inside borders (padding 10 % and 20 % in black, white or grey; a 9:16 or 16:9
letterbox in black; 15 % padding in a random colour; 10 % padding saved as JPEG q70) and matched
with `baken match`, without and with `--candidates border`. Recall: the copy matches its own
original. False matches: an unlisted photo matches anything but a listed near-duplicate of
itself (the manifest's neardup_group). Prints a markdown table.

    bench/setup   # a python with Pillow
    python bench/border_candidates.py [--baken target/debug/baken]

Needs ../shared/corpus (read only); images and the store go to a temporary directory.
"""
import argparse, csv, json, os, random, subprocess, sys, tempfile
from PIL import Image
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = os.path.join(ROOT, "..", "shared", "corpus")
ap = argparse.ArgumentParser()
ap.add_argument("--baken", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "baken"))
B = ap.parse_args().baken
if not os.path.isfile(os.path.join(C, "manifest.csv")):
    sys.exit(f"the shared corpus is missing ({os.path.normpath(C)})")
TMP = tempfile.TemporaryDirectory()
OUT = os.path.join(TMP.name, "img"); DATA = os.path.join(TMP.name, "data")
os.makedirs(OUT, exist_ok=True)
rows = list(csv.DictReader(open(f"{C}/manifest.csv")))
photos = [os.path.join(C, r["file"]) for r in rows]
listed, negs = photos[0::2], photos[1::2]
lrows, nrows = rows[0::2], rows[1::2]
def false(hs):
    # A match of a negative to a listed near-duplicate of it (the manifest's neardup_group) is right.
    n = 0
    for i, h in enumerate(hs):
        g = nrows[i]["neardup_group"]
        if any(not g or lrows[int(m["entry"][1:])]["neardup_group"] != g for m in h):
            n += 1
    return n
rng = random.Random(1)
def pad(frac, colour=None):
    def f(im):
        w, h = im.size
        col = colour or [(0,0,0),(255,255,255),(128,128,128)][rng.randrange(3)]
        pw, ph = round(w*frac/2), round(h*frac/2)
        o = Image.new("RGB", (w+2*pw, h+2*ph), col); o.paste(im, (pw, ph)); return o
    return f
def letterbox(im):
    w, h = im.size
    if w >= h:  # into a 9:16 portrait frame
        H = round(w*16/9); o = Image.new("RGB", (w, H), (0,0,0)); o.paste(im, (0, (H-h)//2))
    else:
        W = round(h*16/9); o = Image.new("RGB", (W, h), (0,0,0)); o.paste(im, ((W-w)//2, 0))
    return o
def coloured(im):
    return pad(0.15, tuple(rng.randrange(256) for _ in range(3)))(im)
T = [("pad 10%", pad(0.10), "PNG"), ("pad 20%", pad(0.20), "PNG"), ("letterbox 16:9", letterbox, "PNG"),
     ("pad 15% colour", coloured, "PNG"), ("pad 10% + jpeg q70", pad(0.10), "JPEG")]
def make(paths, tag):
    out = {}
    for name, f, fmt in T:
        ps = []
        for i, p in enumerate(paths):
            im = Image.open(p).convert("RGB")
            q = os.path.join(OUT, f"{tag}-{i}-{name.replace(' ','_').replace('%','').replace(':','x').replace('+','')}." + ("jpg" if fmt=="JPEG" else "png"))
            f(im).save(q, fmt, **({"quality": 70} if fmt == "JPEG" else {}))
            ps.append(q)
        out[name] = ps
    return out
def run(args):
    r = subprocess.run([B, "--data", DATA] + args, capture_output=True, text=True)
    return [json.loads(l) for l in r.stdout.splitlines()]
if not os.path.exists(DATA):
    hs = run(["hash", "--algo", "pdq,md5"] + listed)
    lst = os.path.join(TMP.name, "list.csv")
    with open(lst, "w") as f:
        f.write("hash_type,hash,classification,external_id\n")
        for i, h in enumerate(hs):
            f.write(f"pdq,{h['pdq']['hash']},A1,L{i}\n")
    subprocess.run([B, "--data", DATA, "list", "create", "orig", "--source", "m"], check=True, capture_output=True)
    subprocess.run([B, "--data", DATA, "list", "import", "orig", "--format", "csv", lst], check=True, capture_output=True)
pos = make(listed, "L"); neg = make(negs, "N")
def hits(lines):
    return [[m for m in l.get("matches", []) if m["hash_type"] == "pdq"] for l in lines]
print("| transform | listed copies | plain PDQ recall | + border_removed recall | matched via candidate | negatives | false matches plain | false matches + candidates (near-duplicates of a listed photo excluded) |")
print("|---|---|---|---|---|---|---|---|")
tot = [0,0]
for name, _, _ in T:
    n = len(pos[name])
    plain = hits(run(["match"] + pos[name])); cand = hits(run(["match", "--candidates", "border"] + pos[name]))
    ok = lambda hs: sum(1 for i, h in enumerate(hs) if any(m["entry"] == f"L{i}" for m in h))
    via = sum(1 for h in cand if any(m.get("candidate") for m in h))
    fp_plain = false(hits(run(["match"] + neg[name])))
    fp_cand = false(hits(run(["match", "--candidates", "border"] + neg[name])))
    print(f"| {name} | {n} | {ok(plain)} ({100*ok(plain)/n:.1f} %) | {ok(cand)} ({100*ok(cand)/n:.1f} %) | {via} | {len(neg[name])} | {fp_plain} | {fp_cand} |")
fp_o = false(hits(run(["match", "--candidates", "border"] + negs)))
print(f"\nUnlisted originals (negatives as they are), with candidates: {fp_o} false matches of {len(negs)}.")
