"""PDQ side by side: Baken vs PyPI `pdqhash` (Meta's C++ core fed by Pillow/libjpeg-turbo), one
core each (taskset), decode included, same files, same run. Prints the Markdown table for
docs/benchmarks.md.

    cargo build --release --example throughput
    python3 bench/pdq_side_by_side.py [--passes 5] [--core 1]

Needs ../shared/corpus, `pip install pdqhash pillow numpy`, and CARGO_TARGET_DIR if set.
"""
import argparse, csv, json, os, platform, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BAKEN = os.path.join(TARGET, "release", "examples", "throughput")


def sets():
    rows = list(csv.DictReader(open(os.path.join(CORPUS, "manifest.csv"))))
    path = lambda r: os.path.join(CORPUS, r["file"])
    side = lambda r: max(int(r["width"]), int(r["height"]))
    return [
        ("large JPEGs (≥1900 px, %d files, mean %.1f MP)", [r for r in rows if r["format"] == "JPEG" and side(r) >= 1900]),
        ("small JPEGs (<1900 px, %d files, mean %.1f MP)", [r for r in rows if r["format"] == "JPEG" and side(r) < 1900]),
        ("PNG (%d files, mean %.1f MP)", [r for r in rows if r["format"] == "PNG"]),
        ("WebP (%d files, mean %.1f MP)", [r for r in rows if r["format"] == "WEBP"]),
    ], path


def run(cmd, core):
    out = subprocess.run(["taskset", "-c", str(core)] + cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--core", type=int, default=1)
    a = ap.parse_args()
    if not os.path.exists(BAKEN):
        sys.exit(f"build first: cargo build --release --example throughput ({BAKEN} missing)")
    groups, path = sets()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; one core per side (taskset -c {a.core}); "
          f"median of {a.passes} passes, decode included.\n")
    print("| files | pipeline | pdqhash img/s | Baken img/s | ratio | Baken fast img/s | fast ratio |")
    print("|---|---|---|---|---|---|---|")
    ref = os.path.join(ROOT, "bench", "pdq_reference.py")
    for label, rows in groups:
        files = [path(r) for r in rows]
        mp = sum(int(r["width"]) * int(r["height"]) for r in rows) / len(rows) / 1e6
        name = label % (len(rows), mp)
        for mode in ("full", "ref512"):
            p = run([sys.executable, ref, "--mode", mode, "--passes", str(a.passes)] + files, a.core)
            b = run([BAKEN, "--mode", mode, "--passes", str(a.passes)] + files, a.core)
            cells = [name, mode, f"{p['images_per_s']:.1f}", f"{b['images_per_s']:.1f}",
                     f"{b['images_per_s'] / p['images_per_s']:.2f}×"]
            if rows[0]["format"] == "JPEG":
                f = run([BAKEN, "--mode", mode, "--fast", "--passes", str(a.passes)] + files, a.core)
                cells += [f"{f['images_per_s']:.1f}", f"{f['images_per_s'] / p['images_per_s']:.2f}×"]
            else:
                cells += ["–", "–"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
