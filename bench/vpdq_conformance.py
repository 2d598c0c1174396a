#!/usr/bin/env python3
"""Baken's vPDQ against Meta's vPDQ reference CLI on videos made here.

Meta's `vpdq-hash-video` is built from the ThreatExchange sources (vpdq/cpp) in a scratch
folder outside the repository — its code is not ours to commit — against the same system
FFmpeg libraries Baken links. For each generated video both hash every frame
(`-r 0` / `--seconds-per-hash 0`) and the outputs are compared frame by frame: frame counts,
frame numbers, timestamps (as Meta writes them, 3 decimals), and the Hamming distance of the
hashes of frames where both qualities are >= 50.

    bench/vpdq_conformance.py --reference /tmp/scratch/vpdq-hash-video \
        --baken target/release/baken [--markdown] \
        [--samples ThreatExchange/tmk/sample-videos] [--published ThreatExchange/vpdq/sample-hashes]

Public samples: `--samples` adds the MP4 files of a folder (Meta's own test videos in the
ThreatExchange repository, `tmk/sample-videos`) to the generated ones, hashed by both; with
`--published`, Baken's hashes of those files are also compared with the hashes Meta committed
for them (`vpdq/sample-hashes/<name>.txt`, every frame at full resolution, made by Meta with
whatever FFmpeg they had then). Neither folder is ours to commit: point at a checkout.

Building the reference (g++, no CMake; from a ThreatExchange checkout's vpdq/cpp):
    g++ -std=c++14 -O3 -DNDEBUG -I. -o vpdq-hash-video apps/vpdq-hash-video.cpp \
        vpdq/cpp/hashing/*.cpp vpdq/cpp/io/*.cpp pdq/cpp/common/*.cpp pdq/cpp/hashing/*.cpp \
        pdq/cpp/downscaling/*.cpp pdq/cpp/io/hashio.cpp \
        $(pkg-config --cflags --libs libavformat libavcodec libswscale libavutil) -lpthread
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

# (name, lavfi source, extra filters, encoder args, extension)
CASES = [
    ("testsrc2 h264 mp4", "testsrc2=size=640x360:rate=30:duration=4", None,
     ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    ("testsrc2 h264 crf40 re-encode", "testsrc2=size=640x360:rate=30:duration=4", None,
     ["-c:v", "libx264", "-crf", "40", "-pix_fmt", "yuv420p"], "mp4"),
    ("mandelbrot h264 mov", "mandelbrot=size=480x320:rate=25", "trim=duration=4",
     ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mov"),
    ("testsrc2 hevc mkv", "testsrc2=size=640x360:rate=24:duration=3", None,
     ["-c:v", "libx265", "-x265-params", "log-level=error"], "mkv"),
    ("testsrc2 vp8 webm", "testsrc2=size=640x360:rate=25:duration=3", None,
     ["-c:v", "libvpx"], "webm"),
    ("testsrc2 vp9 webm", "testsrc2=size=640x360:rate=25:duration=3", None,
     ["-c:v", "libvpx-vp9"], "webm"),
    ("testsrc2 mpeg4 avi", "testsrc2=size=640x360:rate=25:duration=3", None,
     ["-c:v", "mpeg4"], "avi"),
    ("testsrc2 gif", "testsrc2=size=240x160:rate=10:duration=3", None, [], "gif"),
    ("testsrc2 scaled to 1280x720", "testsrc2=size=640x360:rate=30:duration=3", "scale=1280:720",
     ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    ("testsrc2 scaled to 320x180", "testsrc2=size=640x360:rate=30:duration=3", "scale=320:180",
     ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    ("testsrc2 letterboxed 640x480", "testsrc2=size=640x360:rate=30:duration=3",
     "pad=640:480:0:60:black", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    ("life 29.97 fps h264", "life=size=320x240:rate=30000/1001:mold=10:ratio=0.5:death_color=#C83232",
     "trim=duration=4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"),
    ("cellauto 4:4:4 h264", "cellauto=size=320x240:rate=25:rule=110", "trim=duration=3",
     ["-c:v", "libx264", "-pix_fmt", "yuv444p"], "mp4"),
]


def make(tmp, name, src, vf, enc, ext):
    out = os.path.join(tmp, name.replace(" ", "_").replace(":", "") + "." + ext)
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
           "-i", src]
    if vf:
        cmd += ["-vf", vf]
    subprocess.run(cmd + enc + [out], check=True)
    return out


def meta(ref, path, tmp):
    out = os.path.join(tmp, "meta.txt")
    subprocess.run([ref, "-i", path, "-o", out, "-r", "0"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    with open(out) as f:
        for line in f:
            if line.strip():
                n, q, h, t = line.strip().split(",")
                rows.append((int(n), int(q), int(h, 16), t))
    return rows


def published(path):
    """Meta's committed sample hashes: `frame,quality,hash,timestamp` per line."""
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                n, q, h, t = line.strip().split(",")[:4]
                rows.append((int(n), int(q), int(h, 16), t))
    return rows


def compare(name, m, b):
    both = [(x, y) for x, y in zip(m, b) if x[1] >= 50 and y[1] >= 50]
    dist = [bin(x[2] ^ y[2]).count("1") for x, y in both]
    return {
        "case": name,
        "frames_meta": len(m),
        "frames_baken": len(b),
        "numbers_and_timestamps_equal": len(m) == len(b) and all(
            x[0] == y[0] and x[3] == y[3] for x, y in zip(m, b)),
        "quality_equal": sum(x[1] == y[1] for x, y in zip(m, b)),
        "compared": len(both),
        "identical": sum(d == 0 for d in dist),
        "within_8": sum(d <= 8 for d in dist),
        "max_distance": max(dist) if dist else 0,
    }


def baken(bin_, path):
    o = subprocess.run([bin_, "hash", "--algo", "vpdq", "--seconds-per-hash", "0", path],
                       check=True, capture_output=True, text=True)
    d = json.loads(o.stdout)
    return [(f["frame"], f["quality"], int(f["hash"], 16), "%.3f" % f["timestamp"])
            for f in d["vpdq"]["frames"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--baken", required=True)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--samples", help="folder of public sample videos (*.mp4) hashed by both")
    ap.add_argument("--published", help="folder of Meta's committed hashes of those samples")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            path = make(tmp, *case)
            rows.append(compare(case[0], meta(a.reference, path, tmp), baken(a.baken, path)))
        samples = sorted(f for f in os.listdir(a.samples) if f.endswith(".mp4")) if a.samples else []
        for f in samples:
            path = os.path.join(a.samples, f)
            b = baken(a.baken, path)
            rows.append(compare(f"sample {f}: Meta's CLI here", meta(a.reference, path, tmp), b))
            pub = os.path.join(a.published or "", f[:-4] + ".txt")
            if a.published and os.path.exists(pub):
                rows.append(compare(f"sample {f}: Meta's committed hashes", published(pub), b))
    if a.markdown:
        print("| video | frames (Meta / Baken) | numbers + timestamps equal | quality equal "
              "| frames compared (both q ≥ 50) | identical | ≤ 8 bits | max distance |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['case']} | {r['frames_meta']} / {r['frames_baken']} | "
                  f"{'yes' if r['numbers_and_timestamps_equal'] else 'no'} | "
                  f"{r['quality_equal']} | {r['compared']} | {r['identical']} | "
                  f"{r['within_8']} | {r['max_distance']} |")
    else:
        for r in rows:
            print(json.dumps(r))
    # The gate is the reference built here (same FFmpeg): frame counts equal and >= 95 % of
    # compared frames within 8 bits, per video. Meta's committed hashes were made with another
    # FFmpeg, whose decoder output differs on some frames; they are reported, and gated on the
    # total only (a per-video gate would test FFmpeg versions, not vPDQ).
    here = [r for r in rows if "committed" not in r["case"]]
    committed = [r for r in rows if "committed" in r["case"]]
    ok = all(r["frames_meta"] == r["frames_baken"] and r["within_8"] >= 0.95 * r["compared"]
             for r in here)
    if committed:
        ok = ok and all(r["frames_meta"] == r["frames_baken"] for r in committed) and (
            sum(r["within_8"] for r in committed) >= 0.95 * sum(r["compared"] for r in committed))
        if a.markdown:
            n, c, i, w = (sum(r[k] for r in committed) for k in ("frames_meta", "compared", "identical", "within_8"))
            print(f"\nAgainst Meta's committed hashes: {n:,} frames, {c:,} compared, {i:,} identical, "
                  f"{w:,} within 8 bits ({100 * w / c:.1f} %).")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
