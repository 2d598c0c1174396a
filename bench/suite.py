"""Baken's benchmark suite: one command runs every stage and writes docs/benchmarks.md from
bench/benchmarks.md.in, with CSV files and plots under bench/results/.

    bench/run [--quick] [--only STAGE,...] [--skip STAGE,...]      # the one command
    <venv python> bench/suite.py [same options]                    # what bench/run calls

bench/run installs the peers (bench/setup), builds the release binaries and calls this script
with the venv's python. Stages (in order): hashing, scaling, matching, store, scan, service,
video, robustness. Each stage runs Baken and, where there is one, its peer in the same run, writes a
CSV (and plots) under the results directory and returns Markdown plus named values that the
template quotes. Every figure in the generated document comes from this run; the commands that
produced it are listed with it.

`--quick` is a smoke run (small inputs, one pass, 100k-entry matching): it writes to
bench/results/quick/ and bench/results/quick/benchmarks.md, never over the committed results.

The machine is shared and noisy (other builds run on the same cores): single-core measurements
are pinned with taskset to the last core, figures are medians over passes, and comparisons are
ratios between Baken and its peer measured back to back in the same stage. The load average at
start and end is recorded.
"""
import argparse, csv, json, os, platform, re, shlex, shutil, statistics, subprocess, sys, tempfile, time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CORPUS = os.path.normpath(os.path.join(ROOT, "..", "shared", "corpus"))
TEMPLATE = os.path.join(BENCH, "benchmarks.md.in")
STAGES = ["hashing", "scaling", "matching", "store", "scan", "service", "video", "candidates", "robustness"]
# Binaries the suite runs, relative to the cargo target's release directory.
BINARIES = ["baken", "examples/throughput", "examples/matching_scale", "examples/service_load",
            "examples/vpdq_scale", "examples/candidate_cost"]
# Built and set aside when their source is in the checkout: bench/robustness.py's distractor
# generator lands from its own branch.
OPTIONAL_BINARIES = ["examples/distractors"]


class Skip(Exception):
    """A stage cannot run here (e.g. ../shared absent); the message goes into the document."""


@dataclass
class Result:
    markdown: str = ""
    values: dict = field(default_factory=dict)
    commands: list = field(default_factory=list)
    skipped: str = ""
    seconds: float = 0.0
    others: float = 0.0  # mean cores used by other processes during the stage


class Ctx:
    """What every stage needs: options, paths, the binaries and a log of the commands run."""

    def __init__(self, args, bins, results, tmp, docdir):
        self.args, self.bins, self.results, self.tmp, self.docdir = args, bins, results, tmp, docdir
        self.quick = args.quick
        self.passes = 1 if args.quick else args.passes
        self.cores = os.cpu_count() or 1
        # One core for single-threaded measurements: the last one (core 0 takes most interrupts).
        self.core = self.cores - 1
        self.commands = []

    def bin(self, name):
        return os.path.join(self.bins, name)

    def log(self, cmd, note=""):
        """Record a command for the document: binaries by their repository-relative name, long
        file lists abbreviated."""
        shown = []
        files = [c for c in cmd if c.startswith(CORPUS)]
        for c in cmd:
            if c in files:
                if len(files) > 3:
                    if c == files[0]:
                        shown.append(f"<{len(files)} files: {note or 'see the table'}>")
                    continue
                shown.append("../shared/corpus/" + os.path.relpath(c, CORPUS))
            elif c.startswith(self.bins):
                shown.append("target/release/" + os.path.relpath(c, self.bins))
            elif c == sys.executable:
                shown.append("$PY")
            elif c.startswith(ROOT + "/"):
                shown.append(os.path.relpath(c, ROOT))
            elif c.startswith(self.tmp):
                shown.append("$TMP" + c[len(self.tmp):])
            else:
                shown.append(c)
        # $PY (the venv's python), $TMP (the run's scratch directory) and <file lists> are
        # placeholders, left unquoted.
        line = " ".join(s if s[:1] in "<$#" else shlex.quote(s) for s in shown)
        if line not in self.commands:
            self.commands.append(line)

    def run(self, cmd, env=None, note="", ok=(0,), **kw):
        self.log(cmd, note)
        e = dict(os.environ, **(env or {}))
        p = subprocess.run(cmd, env=e, capture_output=True, text=True, **kw)
        if p.returncode not in ok:
            raise RuntimeError(f"{cmd[:4]}... exited {p.returncode}:\n{p.stderr[-3000:]}")
        return p

    def json_run(self, cmd, **kw):
        """Run a tool that prints one JSON object on its last stdout line."""
        return json.loads(self.run(cmd, **kw).stdout.strip().splitlines()[-1])

    def pinned(self, cmd):
        return ["taskset", "-c", str(self.core)] + cmd

    def write_csv(self, name, rows):
        if not rows:
            return
        path = os.path.join(self.results, name)
        keys = list(rows[0].keys())
        for r in rows[1:]:
            keys += [k for k in r if k not in keys]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    def link(self, path):
        """A link from the generated document to a file of this run."""
        return os.path.relpath(path, self.docdir)


def need_corpus():
    if not os.path.exists(os.path.join(CORPUS, "manifest.csv")):
        raise Skip(f"../shared/corpus is absent ({CORPUS}); this stage needs the corpus photos")


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fmt(x, digits=1):
    """Figures for people: thousands separated, sensible precision."""
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}" if digits == 0 else f"{x:.{min(digits, 1)}f}"
    return f"{x:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def plot(path, draw):
    """Draw one PNG with matplotlib (headless); a missing matplotlib costs the plot, not the run."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    draw(ax)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Stage 1: hashing throughput per algorithm and image set, one core, with the peers.

def corpus_sets(quick):
    """Image sets from the corpus manifest: JPEGs bucketed by size (so size, not format, varies
    along the x axis), then PNG and WebP (decoder-bound: Baken's WebP decoder is pure Rust).
    Files within a set are in manifest order; --quick keeps the first few of each."""
    rows = list(csv.DictReader(open(os.path.join(CORPUS, "manifest.csv"))))
    mp = lambda r: int(r["width"]) * int(r["height"]) / 1e6
    sets = [
        ("jpeg-small", "JPEG ≤ 0.3 MP", [r for r in rows if r["format"] == "JPEG" and mp(r) <= 0.3]),
        ("jpeg-medium", "JPEG 0.3–3 MP", [r for r in rows if r["format"] == "JPEG" and 0.3 < mp(r) <= 3]),
        ("jpeg-large", "JPEG > 3 MP", [r for r in rows if r["format"] == "JPEG" and mp(r) > 3]),
        ("png", "PNG", [r for r in rows if r["format"] == "PNG"]),
        ("webp", "WebP", [r for r in rows if r["format"] == "WEBP"]),
    ]
    out = []
    for key, label, rs in sets:
        if quick:
            rs = rs[::max(1, len(rs) // 4)][:4]  # spread over the set, not its first files
        if not rs:
            continue
        out.append({
            "key": key, "label": label, "rows": rs,
            "files": [os.path.join(CORPUS, r["file"]) for r in rs],
            "mean_mp": statistics.mean(mp(r) for r in rs),
            "mean_kb": statistics.mean(int(r["bytes"]) for r in rs) / 1000,
            "jpeg": all(r["format"] == "JPEG" for r in rs),
        })
    return out


# (key, label, throughput.rs arguments, peer): the peer is (script, arguments) doing the same work.
BAKEN_ALGOS = [
    ("pdq-full", "PDQ `full` (hash + quality + 8 dihedrals)", ["--algo", "pdq", "--mode", "full"],
     ("pdq_reference.py", ["--mode", "full", "--dihedral"])),
    ("pdq-ref512", "PDQ `ref512`", ["--algo", "pdq", "--mode", "ref512"],
     ("pdq_reference.py", ["--mode", "ref512", "--dihedral"])),
    ("pdq-fast", "PDQ fast (DCT-scaled JPEG decode)", ["--algo", "pdq", "--mode", "full", "--fast"], None),
    ("phash", "pHash (image_hasher, 64 bit)", ["--algo", "phash"], ("imagehash_reference.py", ["--algo", "phash"])),
    ("dhash", "dHash", ["--algo", "dhash"], ("imagehash_reference.py", ["--algo", "dhash"])),
    ("ahash", "aHash", ["--algo", "ahash"], ("imagehash_reference.py", ["--algo", "ahash"])),
    ("blockhash", "blockhash", ["--algo", "blockhash"], None),
    ("exact", "MD5 + SHA-1 + SHA-256 of the bytes", ["--algo", "md5,sha1,sha256"], None),
]


def stage_hashing(ctx):
    need_corpus()
    sets = corpus_sets(ctx.quick)
    # Which files make up each set, so that a command below can be re-run by hand.
    ctx.write_csv("hashing-sets.csv", [{"set": s["key"], "file": r["file"], "format": r["format"], "width": r["width"],
                                        "height": r["height"], "bytes": r["bytes"]} for s in sets for r in s["rows"]])
    rows, res = [], {}
    for s in sets:
        for key, _, argv, peer in BAKEN_ALGOS:
            if key == "pdq-fast" and not s["jpeg"]:
                continue  # DCT scaling is a JPEG decoder feature: elsewhere fast == full
            cmd = ctx.pinned([ctx.bin("examples/throughput")] + argv + ["--passes", str(ctx.passes)] + s["files"])
            b = ctx.json_run(cmd, note=f"set {s['key']} of hashing-sets.csv")
            res[(s["key"], key, "baken")] = b["images_per_s"]
            rows.append({"set": s["key"], "files": len(s["files"]), "mean_mp": round(s["mean_mp"], 3),
                         "mean_kb": round(s["mean_kb"], 1), "impl": "baken", "algorithm": key,
                         "passes": ctx.passes, "median_pass_s": b["median_pass_s"],
                         "images_per_s": b["images_per_s"], "ms_per_image": round(1000 / b["images_per_s"], 3)})
            if peer:
                script, pargs = peer
                cmd = ctx.pinned([sys.executable, os.path.join(BENCH, script)] + pargs
                                 + ["--passes", str(ctx.passes)] + s["files"])
                p = ctx.json_run(cmd, note=f"set {s['key']} of hashing-sets.csv")
                impl = "pdqhash" if script.startswith("pdq") else "imagehash"
                res[(s["key"], key, impl)] = p["images_per_s"]
                rows.append({"set": s["key"], "files": len(s["files"]), "mean_mp": round(s["mean_mp"], 3),
                             "mean_kb": round(s["mean_kb"], 1), "impl": impl, "algorithm": key,
                             "passes": ctx.passes, "median_pass_s": p["median_pass_s"],
                             "images_per_s": p["images_per_s"], "ms_per_image": round(1000 / p["images_per_s"], 3)})
            print(f"  hashing {s['key']:12} {key:10} {res[(s['key'], key, 'baken')]:8.1f} img/s", file=sys.stderr)
    ctx.write_csv("hashing.csv", rows)

    r = Result()
    get = lambda s, a, i="baken": res.get((s, a, i))
    label = lambda s: f"{s['label']} ({len(s['files'])} files, mean {s['mean_mp']:.2f} MP, {s['mean_kb']:.0f} KB)"
    # PDQ side by side.
    t1 = []
    for s in sets:
        for mode in ("full", "ref512"):
            p, b = get(s["key"], f"pdq-{mode}", "pdqhash"), get(s["key"], f"pdq-{mode}")
            f = get(s["key"], "pdq-fast") if mode == "full" else None
            t1.append([label(s), mode, fmt(p), fmt(b), ratio(b, p),
                       fmt(f) if f else "–", ratio(f, p) if f else "–"])
    # imagehash side by side.
    t2 = []
    for s in sets:
        for a in ("phash", "dhash", "ahash"):
            p, b = get(s["key"], a, "imagehash"), get(s["key"], a)
            t2.append([label(s), a, fmt(p), fmt(b), ratio(b, p)])
    # Every algorithm × set, ms per image (the criterion-style view).
    t3 = []
    for key, name, _, _ in BAKEN_ALGOS:
        cells = []
        for s in sets:
            v = get(s["key"], key)
            cells.append(f"{1000 / v:.2f} ms ({fmt(v)}/s)" if v else "–")
        t3.append([name] + cells)
    r.markdown = "\n\n".join([
        "**PDQ: Baken vs `pdqhash`** (images/s, one core each, decode included; `compute_dihedral`"
        " on the reference side since Baken's `full` output includes the 8 dihedral hashes; fast"
        " ratio = Baken fast ÷ pdqhash `full`):",
        md_table(["files", "pipeline", "pdqhash img/s", "Baken img/s", "ratio", "Baken fast img/s", "fast ratio"], t1),
        "**pHash / dHash / aHash: Baken (`image_hasher`) vs `imagehash`** (images/s, one core each, decode included):",
        md_table(["files", "algorithm", "imagehash img/s", "Baken img/s", "ratio"], t2),
        "**Every algorithm × image set** (Baken, one core, median time per image, decode included):",
        md_table(["algorithm"] + [f"{s['label']} ({s['mean_mp']:.2f} MP)" for s in sets], t3),
    ])

    def draw(ax):
        jsets = [s for s in sets if s["jpeg"]]
        xs = [s["mean_mp"] for s in jsets]
        for key, name, _, _ in BAKEN_ALGOS:
            ys = [get(s["key"], key) for s in jsets]
            ax.plot(xs, ys, marker="o", label=f"Baken {key}")
        for key, impl, colour in (("pdq-full", "pdqhash", "black"), ("phash", "imagehash", "tab:olive")):
            ys = [get(s["key"], key, impl) for s in jsets]
            ax.plot(xs, ys, marker="x", linestyle="--", color=colour, label=f"{impl} ({key})")
        ax.set_xscale("log"); ax.set_yscale("log")
        from matplotlib.ticker import NullFormatter
        ax.set_xticks(xs, [f"{x:.2f}" for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("mean image size of the JPEG set (MP)"); ax.set_ylabel("images/s, one core")
        ax.set_title("Hashing throughput vs image size (decode included)")
        ax.legend(fontsize=7, ncol=2)
    png = plot(os.path.join(ctx.results, "hashing.png"), draw)
    if png:
        r.markdown += f"\n\n![hashing throughput vs image size]({ctx.link(png)})"
    # Values quoted by the template's narrative.
    large = "jpeg-large"
    r.values = {
        "pdq_large_ratio": ratio(get(large, "pdq-full"), get(large, "pdq-full", "pdqhash")),
        "pdq_large_fast_ratio": ratio(get(large, "pdq-fast"), get(large, "pdq-full", "pdqhash")),
        "pdq_large_ref512_ratio": ratio(get(large, "pdq-ref512"), get(large, "pdq-ref512", "pdqhash")),
        "webp_ratio": ratio(get("webp", "pdq-full"), get("webp", "pdq-full", "pdqhash")),
        "phash_large_ratio": ratio(get(large, "phash"), get(large, "phash", "imagehash")),
        "phash_small_ratio": ratio(get("jpeg-small", "phash"), get("jpeg-small", "phash", "imagehash")),
    }
    lmp = next((s["mean_mp"] for s in sets if s["key"] == large), None)
    pf, dec = get(large, "pdq-full"), get(large, "exact")
    if lmp and pf:
        r.values["pdq_large_ms"] = f"{1000 / pf:.0f} ms"
        r.values["large_mp"] = f"{lmp:.1f} MP"
    return r


# ---------------------------------------------------------------------------------------------
# Stage 2: scaling of the batch hasher from 1 to all cores.

def stage_scaling(ctx):
    need_corpus()
    photos = sorted(os.path.join(CORPUS, "photos", f) for f in os.listdir(os.path.join(CORPUS, "photos")))
    if ctx.quick:
        photos = photos[::8]
    # Rounds of 1, 2, ..., all cores, one timed pass each, rather than all passes of one core
    # count then the next: other people's builds come and go, and interleaving spreads that
    # contention over every core count instead of biasing whichever ran during a build.
    runs = {k: [] for k in range(1, ctx.cores + 1)}
    for rnd in range(ctx.passes):
        for k in runs:
            # Pin to k cores and size the rayon pool to match: the pool must not oversubscribe.
            cmd = ["taskset", "-c", f"0-{k - 1}", ctx.bin("examples/throughput"), "--batch",
                   "--algo", "pdq,md5,sha1,sha256", "--passes", "1"] + photos
            b = ctx.json_run(cmd, env={"RAYON_NUM_THREADS": str(k)}, note="all corpus photos")
            runs[k].append(b)
            print(f"  scaling round {rnd + 1}, {k} cores: {b['images_per_s']:.1f} img/s", file=sys.stderr)
    rows = []
    for k, bs in runs.items():
        rows.append({"cores": k, "threads": bs[0]["threads"], "files": bs[0]["files"],
                     "mb": round(bs[0]["bytes"] / 1e6, 1), "rounds": len(bs),
                     "images_per_s_each": " ".join(str(b["images_per_s"]) for b in bs),
                     "images_per_s": statistics.median(b["images_per_s"] for b in bs),
                     # What the pass really got: CPU seconds per wall second, and the work done
                     # per CPU second (flat across core counts = no parallel overhead).
                     "cores_obtained": round(statistics.median(b["cpu_s_per_pass"] / b["mean_pass_s"] for b in bs), 2),
                     "images_per_cpu_s": round(statistics.median(b["files"] / b["cpu_s_per_pass"] for b in bs), 1)})
    one = rows[0]["images_per_s"]
    for x in rows:
        x["speedup"] = round(x["images_per_s"] / one, 3)
        x["efficiency"] = round(x["speedup"] / x["cores"], 3)
        x["cpu_efficiency"] = round(x["images_per_cpu_s"] / rows[0]["images_per_cpu_s"], 3)
    ctx.write_csv("scaling.csv", rows)
    r = Result()
    r.markdown = (f"`Hasher::hash_batch` (rayon) over {rows[0]['files']} corpus photos ({rows[0]['mb']} MB),"
                  f" PDQ `full` + MD5 + SHA-1 + SHA-256, decode included; {ctx.passes} interleaved round(s) over the core counts,"
                  f" each one warm-up and one timed pass; medians:\n\n"
                  + md_table(["cores", "images/s (each round)", "median images/s", "speed-up vs 1 core", "efficiency",
                              "cores obtained (CPU s ÷ wall s)", "images per CPU second", "vs 1 core"],
                             [[x["cores"], " / ".join(fmt(float(v)) for v in x["images_per_s_each"].split()),
                               f"**{fmt(x['images_per_s'])}**", f"{x['speedup']:.2f}×", f"{100 * x['efficiency']:.0f} %",
                               f"{x['cores_obtained']:.2f}", fmt(x["images_per_cpu_s"]), f"{100 * x['cpu_efficiency']:.0f} %"]
                              for x in rows]))

    def draw(ax):
        ks = [x["cores"] for x in rows]
        ax.plot(ks, [x["images_per_s"] for x in rows], marker="o", label="measured")
        ax.plot(ks, [one * k for k in ks], linestyle="--", label="linear")
        ax.set_xticks(ks); ax.set_xlabel("cores"); ax.set_ylabel("images/s")
        ax.set_title("Batch hashing: PDQ + exact hashes on the corpus photos"); ax.legend()
    png = plot(os.path.join(ctx.results, "scaling.png"), draw)
    if png:
        r.markdown += f"\n\n![core scaling]({ctx.link(png)})"
    last = rows[-1]
    r.values = {"cores": str(last["cores"]), "speedup": f"{last['speedup']:.2f}×",
                "cores_obtained": f"{last['cores_obtained']:.2f}", "cpu_efficiency": f"{100 * last['cpu_efficiency']:.0f} %",
                "efficiency": f"{100 * last['efficiency']:.0f} %", "all_cores_img_s": fmt(last["images_per_s"])}
    return r


# ---------------------------------------------------------------------------------------------
# Stage 3: matching vs faiss.

def matching_sizes(ctx):
    if ctx.args.matching_sizes:
        return [int(float(x)) for x in ctx.args.matching_sizes.split(",")]
    return [100_000] if ctx.quick else [1_000_000, 10_000_000]


def queries_for(n, quick):
    # Fewer queries at 10M: faiss flat answers ~8 a second there, and medians over 60 queries
    # are already stable to a few per cent.
    return 100 if quick else (300 if n <= 1_000_000 else 60)


def stage_matching(ctx):
    sys.path.insert(0, BENCH)
    import matching_side_by_side as msbs
    rows, out = [], []
    for n in matching_sizes(ctx):
        q = queries_for(n, ctx.quick)
        # The suite calls bench/matching_side_by_side.py's measure() in-process; run alone, the
        # same script does the same with the command logged first.
        ctx.log([sys.executable, os.path.join(BENCH, "matching_side_by_side.py"), "--n", str(n), "--queries", str(q)])
        m = msbs.measure(n, q, exe=ctx.bin("examples/matching_scale"), core=ctx.core, tmp=ctx.tmp,
                         log=lambda cmd: ctx.log(["#", "which", "runs:"] + cmd[:-1] + ["$TMP/dump"]))
        b, f, mh = m["baken"], m["flat"], m["multihash"]
        mi, sc, raw = b["mih"], b["scan"], b["raw_hash_mb"]
        out.append(m)
        rows.append({
            "n": n, "queries": q, "kernel": b["kernel"], "hits": b["hits"],
            "baken_mih_qps": round(mi["queries_per_s"], 2), "baken_scan_qps": round(sc["queries_per_s"], 2),
            "faiss_flat_qps": round(f["qps"], 2), "faiss_multihash_qps": round(mh["qps"], 2),
            "mih_over_flat": round(mi["queries_per_s"] / f["qps"], 2),
            "scan_over_flat": round(sc["queries_per_s"] / f["qps"], 2),
            "mih_over_multihash": round(mi["queries_per_s"] / mh["qps"], 2),
            "recall_baken": 1.0, "recall_flat": f["recall"], "recall_multihash": mh["recall"],
            "build_s_mih": round(mi["index_build_s"], 3), "build_s_scan": round(sc["index_build_s"], 3),
            "build_s_flat": round(f["build_s"], 3), "build_s_multihash": round(mh["build_s"], 3),
            "raw_mb": raw, "mb_mih": round(mi["index_mb"], 1), "mb_scan": round(sc["index_mb"], 1),
            "mb_flat_rss": round(f["index_mb"], 1), "mb_multihash_rss": round(mh["index_mb"], 1),
        })
        print(f"  matching {n:,}: mih {mi['queries_per_s']:.0f} q/s, faiss flat {f['qps']:.1f} q/s", file=sys.stderr)
    ctx.write_csv("matching.csv", rows)
    r = Result()
    t1 = [[f"{x['n']:,}", x["queries"], fmt(x["baken_mih_qps"]), fmt(x["baken_scan_qps"]), fmt(x["faiss_flat_qps"], 2),
           fmt(x["faiss_multihash_qps"]), f"{x['mih_over_flat']:.1f}×", f"{x['scan_over_flat']:.1f}×",
           f"{x['mih_over_multihash']:.1f}×",
           f"1.000 / {x['recall_flat']:.3f} / {x['recall_multihash']:.3f}"] for x in rows]
    t2 = [[f"{x['n']:,}", f"{x['build_s_mih']:.2f} / {x['build_s_scan']:.2f} / {x['build_s_flat']:.2f} / {x['build_s_multihash']:.2f}",
           f"{x['raw_mb']:.0f} MB", f"{x['mb_mih']:.0f} MB ({x['mb_mih'] / x['raw_mb']:.2f}×)",
           f"{x['mb_scan']:.0f} MB ({x['mb_scan'] / x['raw_mb']:.2f}×)",
           f"{x['mb_flat_rss']:.0f} MB", f"{x['mb_multihash_rss']:.0f} MB"] for x in rows]
    r.markdown = "\n\n".join([
        f"Search kernel picked at run time: `{rows[0]['kernel']}`.",
        md_table(["entries", "queries", "Baken mih q/s", "Baken scan q/s", "faiss flat q/s", "faiss multihash q/s",
                  "mih ÷ flat", "scan ÷ flat", "mih ÷ multihash", "recall Baken / flat / multihash"], t1),
        "Build time and memory (Baken: the index's own accounting; faiss: growth of the Python process's"
        " RSS while adding, so allocator slack is included):",
        md_table(["entries", "build s mih / scan / flat / multihash", "raw hashes", "Baken mih", "Baken scan",
                  "faiss flat", "faiss multihash"], t2),
    ])

    def draw(ax):
        ns = [x["n"] for x in rows]
        for k, lab, st in (("baken_mih_qps", "Baken multi-index", "-"), ("baken_scan_qps", "Baken scan", "-"),
                           ("faiss_flat_qps", "faiss IndexBinaryFlat", "--"),
                           ("faiss_multihash_qps", "faiss IndexBinaryMultiHash", "--")):
            ax.plot(ns, [x[k] for x in rows], marker="o", linestyle=st, label=lab)
        ax.set_xscale("log"); ax.set_yscale("log")
        ax.set_xlabel("entries"); ax.set_ylabel("queries/s (8 variants, radius 31), one thread")
        ax.set_title("PDQ matching vs faiss"); ax.legend(fontsize=8)
    png = plot(os.path.join(ctx.results, "matching.png"), draw)
    if png:
        r.markdown += f"\n\n![matching q/s vs entries]({ctx.link(png)})"
    for x in rows:
        tag = f"{x['n'] // 1_000_000}m" if x["n"] >= 1_000_000 else f"{x['n'] // 1000}k"
        r.values[f"mih_flat_{tag}"] = f"{x['mih_over_flat']:.1f}×"
        r.values[f"scan_flat_{tag}"] = f"{x['scan_over_flat']:.1f}×"
        r.values[f"mih_mem_{tag}"] = f"{x['mb_mih'] / x['raw_mb']:.2f}×"
        r.values[f"mih_ms_{tag}"] = f"{1000 / x['baken_mih_qps']:.2f} ms"
    big = rows[-1]
    r.values.update({"largest": f"{big['n']:,}", "mih_flat_largest": f"{big['mih_over_flat']:.1f}×",
                     "scan_flat_largest": f"{big['scan_over_flat']:.1f}×",
                     "mih_mem_largest": f"{big['mb_mih'] / big['raw_mb']:.2f}×",
                     "scan_mem_largest": f"{big['mb_scan'] / big['raw_mb']:.2f}×"})
    return r


# ---------------------------------------------------------------------------------------------
# Stage 4: store import and cold start.

def stage_store(ctx):
    sizes = [100_000] if ctx.quick else [1_000_000, 10_000_000]
    if ctx.args.matching_sizes:
        sizes = matching_sizes(ctx)
    rows = []
    for n in sizes:
        # Three runs where they are cheap (import of 1M takes ~5 s); one at 10M (~1 min, ~2 GB).
        runs = 1 if (ctx.quick or n > 1_000_000) else 3
        for i in range(runs):
            cmd = ctx.pinned([ctx.bin("examples/matching_scale"), "--n", str(n), "--queries", str(queries_for(n, ctx.quick)),
                              "--store"])
            b = ctx.json_run(cmd, env={"TMPDIR": ctx.tmp})
            s = b["store"]
            rows.append({"n": n, "run": i + 1, "import_s": round(s["import_s"], 3),
                         "import_entries_per_s": round(s["import_entries_per_s"]),
                         "cold_start_from_store_s": round(s["cold_start_from_store_s"], 3),
                         "cold_start_from_snapshot_s": round(s["cold_start_s"], 3),
                         "matcher_qps": round(s["matcher_queries_per_s"], 1),
                         "matcher_rss_growth_mb": round(s["matcher_rss_growth_mb"], 1)})
            print(f"  store {n:,} run {i + 1}: import {s['import_entries_per_s']:,.0f}/s, cold {s['cold_start_s']:.2f} s",
                  file=sys.stderr)
    ctx.write_csv("store.csv", rows)
    r = Result()
    t = []
    for n in sizes:
        rs = [x for x in rows if x["n"] == n]
        med = lambda k: statistics.median(x[k] for x in rs)
        all_ = lambda k, f: " / ".join(f(x[k]) for x in rs) if len(rs) > 1 else f(rs[0][k])
        t.append([f"{n:,}", len(rs), f"{all_('import_entries_per_s', lambda v: f'{v:,.0f}')} (median **{med('import_entries_per_s'):,.0f}**)",
                  f"{med('cold_start_from_store_s'):.2f} s", f"{med('cold_start_from_snapshot_s'):.2f} s",
                  fmt(med("matcher_qps"))])
        tag = f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1000}k"
        r.values[f"import_{tag}"] = f"{med('import_entries_per_s'):,.0f}/s"
        r.values[f"cold_snapshot_{tag}"] = f"{med('cold_start_from_snapshot_s'):.2f} s"
        r.values[f"cold_store_{tag}"] = f"{med('cold_start_from_store_s'):.2f} s"
    r.markdown = ("One core (`taskset`), RocksDB in a temporary directory; medians over the runs:\n\n"
                  + md_table(["entries", "runs", "import entries/s", "cold start from the store",
                              "cold start from the snapshot", "matcher q/s (incl. metadata reads on hits)"], t)
                  + "\n\n(store.csv also holds the matcher's RSS growth at start, which understates the index's"
                  " memory here: the allocator reuses what the import freed. The matching stage has the index sizes.)")
    return r


# ---------------------------------------------------------------------------------------------
# Stage 5: `baken scan` over the corpus photos.

def time_v(ctx, cmd, cwd):
    """Run under /usr/bin/time -v: (wall seconds measured here, peak RSS in MB)."""
    ctx.log(cmd)
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode not in (0, 1):  # 1: a match (the demo list may match nothing here, or something)
        raise RuntimeError(f"{cmd[:3]} exited {p.returncode}: {p.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return wall, int(m.group(1)) / 1024 if m else None, p.stderr


def stage_scan(ctx):
    need_corpus()
    photos = os.path.join(CORPUS, "photos")
    files = [os.path.join(photos, f) for f in os.listdir(photos)]
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    work = tempfile.mkdtemp(dir=ctx.tmp, prefix="scan-")
    # A store holding the demo list (PDQ, MD5, ...) so the matcher runs; the corpus is benign.
    # `demo` matches its own images at the end, hence exit status 1 ("a match").
    ctx.run([ctx.bin("baken"), "--data", os.path.join(work, "data"), "demo", "--images", os.path.join(work, "demo")],
            cwd=work, ok=(0, 1))
    runs = 1 if ctx.quick else 3
    rows = []
    for i in range(runs):
        out = os.path.join(work, f"out{i}.jsonl")
        wall, rss, err = time_v(ctx, ["/usr/bin/time", "-v", ctx.bin("baken"), "--data", os.path.join(work, "data"), "scan", photos,
                                      "--out", out], cwd=work)
        rows.append({"run": i + 1, "files": len(files), "mb": round(mb, 1), "wall_s": round(wall, 3),
                     "images_per_s": round(len(files) / wall, 1), "mb_per_s": round(mb / wall, 1),
                     "max_rss_mb": round(rss, 1) if rss else None, "cores": ctx.cores})
        print(f"  scan run {i + 1}: {len(files) / wall:.1f} img/s", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    ctx.write_csv("scan.csv", rows)
    med = lambda k: statistics.median(x[k] for x in rows)
    r = Result()
    r.markdown = (f"`baken scan` over `../shared/corpus/photos` ({len(files)} photos, {mb:.0f} MB: JPEG, PNG, WebP),"
                  f" all {ctx.cores} cores, against the demo list in a local store; the wall time is the whole process"
                  f" (start, store open, scan, summary). PDQ + exact hashes are computed (no list holds other types).\n\n"
                  + md_table(["runs", "images/s (each run)", "median images/s", "median MB/s", "max RSS"],
                             [[len(rows), " / ".join(fmt(x["images_per_s"]) for x in rows), f"**{fmt(med('images_per_s'))}**",
                               fmt(med("mb_per_s")), f"{max(x['max_rss_mb'] or 0 for x in rows):.0f} MB"]]))
    r.values = {"img_s": fmt(med("images_per_s")), "rss": f"{max(x['max_rss_mb'] or 0 for x in rows):.0f} MB"}
    return r


# ---------------------------------------------------------------------------------------------
# Stage 6: the gRPC service under load.

def stage_service(ctx):
    need_corpus()
    secs = 2 if ctx.quick else 10
    configs = [(8, 16)] if ctx.quick else [(8, 16), (2, 16)]
    rows, lines = [], []
    for conc, mif in configs:
        cmd = [ctx.bin("examples/service_load"), "--seconds", str(secs), "--concurrency", str(conc),
               "--max-in-flight", str(mif)]
        p = ctx.run(cmd, env={"TMPDIR": ctx.tmp})
        if "SKIPPED" in p.stderr:
            raise Skip(p.stderr.strip())
        out = p.stdout.strip().splitlines()
        lines.append((conc, out))
        row = {"concurrency": conc, "max_in_flight": mif, "seconds_per_phase": secs}
        for l in out:
            if m := re.search(r"in-process hash_batch: ([\d.]+)", l):
                row["inprocess_img_s"] = float(m.group(1))
            if m := re.search(r"^service Scan.*?([\d.]+) req/s = (\d+)% .*p50 ([\d.]+) ms, p99 ([\d.]+) ms; shed (\d+).*RSS (\d+) MiB", l):
                row.update(service_rps=float(m.group(1)), pct_of_inprocess=int(m.group(2)), p50_ms=float(m.group(3)),
                           p99_ms=float(m.group(4)), shed=int(m.group(5)), rss_mib=int(m.group(6)))
            if m := re.search(r"overload.*?: (\d+) ok \(([\d.]+)/s goodput\), (\d+) shed \((\d+)%\), (\d+) other.*idle (\d+) MiB, peak (\d+) MiB", l):
                row.update(overload_ok=int(m.group(1)), overload_goodput=float(m.group(2)), overload_shed=int(m.group(3)),
                           overload_shed_pct=int(m.group(4)), overload_errors=int(m.group(5)),
                           overload_rss_idle_mib=int(m.group(6)), overload_rss_peak_mib=int(m.group(7)))
            if m := re.search(r"^recovery.*?: ([\d.]+) req/s, p99 ([\d.]+) ms, shed (\d+)", l):
                row.update(recovery_rps=float(m.group(1)), recovery_p99_ms=float(m.group(2)), recovery_shed=int(m.group(3)))
        rows.append(row)
        print(f"  service c={conc}: {row.get('service_rps')} req/s", file=sys.stderr)
    ctx.write_csv("service.csv", rows)
    r = Result()
    parts = []
    for conc, out in lines:
        parts.append(f"{conc} closed-loop clients, {secs} s per phase:\n\n```\n" + "\n".join(out) + "\n```")
    r.markdown = "\n\n".join(parts)
    first = rows[0]
    r.values = {"pct": f"{first.get('pct_of_inprocess', '–')} %", "rps": fmt(first.get("service_rps")),
                "shed_pct": f"{first.get('overload_shed_pct', '–')} %",
                "rss_peak": f"{first.get('overload_rss_peak_mib', '–')} MiB"}
    return r


# ---------------------------------------------------------------------------------------------
# Stage 7: video — vPDQ hashing frames/s against Meta's vpdq-hash-video, and vPDQ matching.

# (name, lavfi source, encoder args, extension); --quick cuts each to 2 s.
VIDEOS = [
    ("1080p H.264 30 fps", "testsrc2=size=1920x1080:rate=30", 20,
     ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], "mp4"),
    ("720p VP9 25 fps", "testsrc2=size=1280x720:rate=25", 20,
     ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "2M"], "webm"),
    ("480p H.264 30 fps", "testsrc2=size=854x480:rate=30", 30,
     ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], "mp4"),
]


def vpdq_reference(ctx):
    ref = ctx.args.vpdq_reference or os.environ.get("BAKEN_VPDQ_REFERENCE")
    return ref if ref and os.access(ref, os.X_OK) else None


def timed(ctx, cmd, passes):
    """Median wall seconds of `cmd` pinned to one core; the last run's stdout."""
    walls, out = [], ""
    for _ in range(passes):
        t = time.perf_counter()
        out = ctx.run(ctx.pinned(cmd)).stdout
        walls.append(time.perf_counter() - t)
    return statistics.median(walls), out


def stage_video(ctx):
    if not shutil.which("ffmpeg"):
        raise Skip("ffmpeg is not installed (scripts/setup installs it)")
    ref = vpdq_reference(ctx)
    work = tempfile.mkdtemp(dir=ctx.tmp, prefix="video-")
    files = []
    for name, src, secs, enc, ext in VIDEOS:
        secs = 2 if ctx.quick else secs
        path = os.path.join(work, re.sub(r"\W+", "-", name).strip("-").lower() + "." + ext)
        ctx.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                 f"{src}:duration={secs}"] + enc + [path])
        files.append((f"{name}, {secs} s (generated)", [path]))
    samples = ctx.args.vpdq_samples
    if samples and os.path.isdir(samples):
        vids = sorted(os.path.join(samples, f) for f in os.listdir(samples) if f.endswith(".mp4"))
        vids = vids[:2] if ctx.quick else vids
        files.append((f"Meta's sample videos (ThreatExchange `tmk/sample-videos`, {len(vids)} MP4 files)", vids))
    passes = ctx.passes
    rows = []
    for label, paths in files:
        for sph in (1.0, 0.0):
            row = {"video": label, "files": len(paths), "seconds_per_hash": sph}
            frames = hashes = 0
            bw = mw = 0.0
            mhashes = 0
            for path in paths:
                w, out = timed(ctx, [ctx.bin("baken"), "hash", "--algo", "vpdq", "--seconds-per-hash", str(sph),
                                     "--max-bytes", str(1 << 30), path], passes)
                v = json.loads(out.strip().splitlines()[-1])
                bw += w
                hashes += len(v["vpdq"]["frames"])
                frames += v["video"]["frames_decoded"]
                if ref:
                    txt = os.path.join(work, "meta.txt")
                    w, _ = timed(ctx, [ref, "-i", path, "-o", txt, "-r", str(sph), "-t", "1"], passes)
                    mw += w
                    with open(txt) as f:
                        mhashes += sum(1 for line in f if line.strip())
            row.update(frames=frames, baken_hashes=hashes, baken_s=round(bw, 3),
                       baken_fps=round(frames / bw, 1) if frames else None)
            if ref:
                row.update(meta_hashes=mhashes, meta_s=round(mw, 3), meta_fps=round(frames / mw, 1) if frames else None)
            rows.append(row)
            print(f"  vpdq {label} S={sph:g}: Baken {row.get('baken_fps')} frames/s, Meta {row.get('meta_fps')}",
                  file=sys.stderr)
    ctx.write_csv("video_hashing.csv", rows)

    # vPDQ matching at 10k (and, unless --quick, 1M) listed videos of 30 frames.
    scale = []
    for videos, queries in ([(10_000, 50)] if ctx.quick else [(10_000, 200), (1_000_000, 20)]):
        m = json.loads(ctx.run(ctx.pinned([ctx.bin("examples/vpdq_scale"), "--videos", str(videos), "--frames", "30",
                                           "--queries", str(queries)])).stdout)
        for kind in ("scan", "mih"):
            k = m[kind]
            scale.append({"videos": videos, "frames": videos * 30, "queries": queries, "index": kind,
                          "build_s": round(k["build_s"], 2), "index_mb": round(k["index_mb"], 1),
                          "query_videos_per_s": round(k["query_videos_per_s"], 1),
                          "query_frames_per_s": round(k["query_frames_per_s"], 0)})
        print(f"  vpdq matching {videos:,} videos: mih {m['mih']['query_videos_per_s']:.1f} videos/s", file=sys.stderr)
    ctx.write_csv("video_matching.csv", scale)

    # Peak RSS of the whole `baken hash` process on a 4K stream (16 reference frames: the worst
    # case the memory limit assumes) and on one short and one 2-hour stream of the same kind.
    mem = []
    long_secs = 600 if ctx.quick else 7200
    for label, src, enc in [
        ("4K UHD H.264, 16 reference frames, 2 s", "testsrc2=size=3840x2160:rate=30:duration=2",
         ["-c:v", "libx264", "-preset", "ultrafast", "-refs", "16", "-pix_fmt", "yuv420p"]),
        ("320×180 H.264 5 fps, 1 min", "testsrc2=size=320x180:rate=5:duration=60",
         ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
        (f"320×180 H.264 5 fps, {long_secs // 60} min", f"testsrc2=size=320x180:rate=5:duration={long_secs}",
         ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]),
    ]:
        path = os.path.join(work, f"mem-{len(mem)}.mp4")
        ctx.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i", src] + enc + [path])
        wall, rss, _ = time_v(ctx, ["/usr/bin/time", "-v", ctx.bin("baken"), "hash", "--algo", "vpdq", "--max-bytes",
                                    str(1 << 30), path], cwd=work)
        mem.append({"video": label, "file_mb": round(os.path.getsize(path) / 1e6, 1), "wall_s": round(wall, 2),
                    "max_rss_mb": round(rss, 1) if rss else None})
        print(f"  vpdq memory {label}: {rss:.0f} MB", file=sys.stderr)
    ctx.write_csv("video_memory.csv", mem)
    shutil.rmtree(work, ignore_errors=True)

    r = Result()
    head = ["video", "sampling", "frames", "Baken frames/s", "Baken s"]
    if ref:
        head += ["Meta frames/s", "Meta s", "Baken ÷ Meta", "hashes Baken / Meta"]
    t1 = []
    for x in rows:
        line = [x["video"], "1 fps" if x["seconds_per_hash"] else "every frame", f"{x['frames']:,}",
                f"**{fmt(x['baken_fps'])}**", fmt(x["baken_s"], 2)]
        if ref:
            line += [fmt(x["meta_fps"]), fmt(x["meta_s"], 2), f"**{ratio(x['baken_fps'], x['meta_fps'])}**",
                     f"{x['baken_hashes']:,} / {x['meta_hashes']:,}"]
        t1.append(line)
    t2 = [[f"{x['videos']:,} ({x['frames']:,})", x["index"], f"{x['build_s']:.2f} s", f"{x['index_mb']:,.0f} MB",
           f"**{fmt(x['query_videos_per_s'])}**", fmt(x["query_frames_per_s"])] for x in scale]
    peer = ("Meta's `vpdq-hash-video` (built from the ThreatExchange sources against the same system FFmpeg"
            f" libraries, `-t 1`; `{ref}`)" if ref else
            "Meta's `vpdq-hash-video` was **not given** (`--vpdq-reference PATH` or `BAKEN_VPDQ_REFERENCE`), so it has"
            " no column in this run")
    r.markdown = "\n\n".join([
        f"Whole commands, one core each (`taskset`), median of {passes} pass{'es' if passes > 1 else ''} per file: Baken's `baken hash --algo vpdq"
        f" --seconds-per-hash S` and {peer}, `-r S`, on the same files back to back. Frames/s counts decoded frames"
        " (both decode every frame; at 1 fps only every `int(fps)`-th is converted to RGB and hashed), process start"
        " and file reading included.",
        md_table(head, t1),
        "vPDQ matching (`examples/vpdq_scale`: the index the matcher builds for a `vpdq` list, one row per listed frame,"
        " 30 random frames per listed video; half the query videos are a listed video with every frame moved by 8 random"
        " bits, half unrelated, and the example fails on any wrong answer; one thread; metadata reads not included):",
        md_table(["listed videos (frames)", "index", "build", "index RAM", "query videos/s", "query frames/s"], t2),
        "Memory: peak RSS of the whole `baken hash --algo vpdq` process (`/usr/bin/time -v`), which holds the"
        " input file in memory (its size is in the table). Frames are dropped after hashing, so the long stream"
        " must need no more than the short one; the 4K decoder stays within the estimate the `max_memory` limit"
        f" is checked against ({3840 * 2160 * 57 / 1e6:.0f} MB for 4K UHD). `tests/video_memory.rs` asserts both.",
        md_table(["video", "file", "max RSS", "wall"],
                 [[x["video"], f"{x['file_mb']:.1f} MB", f"**{x['max_rss_mb']:.0f} MB**", f"{x['wall_s']:.1f} s"] for x in mem]),
    ])
    by = {(x["video"], x["seconds_per_hash"]): x for x in rows}
    first = VIDEOS[0][0]
    k1 = next((v for (lab, s), v in by.items() if lab.startswith(first) and s == 1.0), None)
    k0 = next((v for (lab, s), v in by.items() if lab.startswith(first) and s == 0.0), None)
    if k1 and k0:
        r.values.update({"fps_1080_1": fmt(k1["baken_fps"]), "fps_1080_0": fmt(k0["baken_fps"]),
                         "ratio_1080_1": ratio(k1["baken_fps"], k1.get("meta_fps")),
                         "ratio_1080_0": ratio(k0["baken_fps"], k0.get("meta_fps"))})
    big = [x for x in scale if x["index"] == "mih"][-1]
    r.values.update({"match_videos": f"{big['videos']:,}", "match_vps": fmt(big["query_videos_per_s"]),
                     "match_ms": f"{1000 / big['query_videos_per_s']:.0f} ms",
                     "rss_4k": f"{mem[0]['max_rss_mb']:.0f} MB", "rss_short": f"{mem[1]['max_rss_mb']:.0f} MB",
                     "rss_long": f"{mem[2]['max_rss_mb']:.0f} MB"})
    return r


# ---------------------------------------------------------------------------------------------
# Stage 8: robustness (bench/robustness.py, written separately; run when present).

def stage_candidates(ctx):
    """Per-image cost of the query-side candidates (issue 14), decode excluded."""
    need_corpus()
    photos = os.path.join(CORPUS, "photos")
    reps = "1" if ctx.quick else "5"
    p = ctx.run(ctx.pinned([ctx.bin("examples/candidate_cost"), "--reps", reps, photos]))
    lines = p.stdout.strip().splitlines()
    r = Result()
    r.markdown = (f"`examples/candidate_cost` over `../shared/corpus/photos`, pinned to one core: {lines[0]}.\n\n"
                  + "\n".join(lines[1:]))
    return r


def stage_robustness(ctx):
    script = os.path.join(BENCH, "robustness.py")
    if not os.path.exists(script):
        raise Skip("bench/robustness.py is not in this checkout (it lands from its own branch)")
    # The script finds its binaries under $CARGO_TARGET_DIR/release: point that at this run's
    # binaries rather than at a target directory other checkouts may be rebuilding.
    target = os.path.join(ctx.tmp, "robustness-target")
    os.makedirs(target, exist_ok=True)
    os.symlink(ctx.bins, os.path.join(target, "release"))
    cmd = [sys.executable, script] + (["--quick"] if ctx.quick else [])
    p = ctx.run(cmd, env={"CARGO_TARGET_DIR": target, "TMPDIR": ctx.tmp}, cwd=ROOT)
    tail = "\n".join(p.stdout.strip().splitlines()[-15:])
    r = Result()
    # bench/robustness.py writes docs/robustness.md, or with --quick everything under bench/results/quick/.
    doc = os.path.join(ctx.results if ctx.quick else os.path.join(ROOT, "docs"), "robustness.md")
    r.markdown = (f"Recall per transform against the false-positive rate: see [robustness.md]({ctx.link(doc)}) and"
                  f" `{os.path.relpath(ctx.results, ROOT)}/robustness*`, written by this stage. Its last lines of output:"
                  "\n\n```\n" + tail + "\n```")
    return r


# ---------------------------------------------------------------------------------------------
# Machine description and document.

def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, shell=isinstance(cmd, str)).stdout.strip()
    except OSError:
        return ""


def machine():
    cpu = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            cpu.setdefault(k.strip(), v.strip())
    flags = set(cpu.get("flags", "").split())
    wanted = ["avx2", "bmi2", "popcnt", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq"]
    mem = sh("grep MemTotal /proc/meminfo").split()
    versions = {}
    for mod in ("pdqhash", "imagehash", "faiss", "PIL", "numpy", "matplotlib"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:
            versions[mod] = "absent"
    try:
        from importlib.metadata import version
        versions["pdqhash"] = version("pdqhash")
    except Exception:
        pass
    dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu.get("model name", platform.processor() or platform.machine()),
        "cores": os.cpu_count(),
        "flags": " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted),
        "ram_gib": round(int(mem[1]) / 1024 / 1024, 1) if len(mem) > 1 else None,
        "kernel": platform.release(),
        "rustc": sh(["rustc", "-V"]),
        "python": platform.python_version(),
        "versions": versions,
        "commit": sh(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"]) + (" (with uncommitted changes)" if dirty else ""),
        "branch": sh(["git", "-C", ROOT, "rev-parse", "--abbrev-ref", "HEAD"]),
    }


def cpu_snapshot():
    """(wall, machine busy CPU seconds, CPU seconds of this process and its finished children):
    the difference between the last two over a stage is what everybody else used meanwhile."""
    import resource
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(v[:8]) - v[3] - v[4]) / hz  # all but idle and iowait; guest time is within user
    own = sum(getattr(resource.getrusage(w), a) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for a in ("ru_utime", "ru_stime"))
    return time.time(), busy, own


def others_cores(a, b):
    """Mean number of cores other processes kept busy between two cpu_snapshot()s."""
    wall = b[0] - a[0]
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / wall) if wall > 0 else 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_md(m, start, end, load0, load1, wall, command):
    v = m["versions"]
    return "\n".join([
        f"- **Command:** `{command}` (started {start}, finished {end}, {wall / 60:.1f} min)",
        f"- **Commit:** `{m['commit']}` on `{m['branch']}`; {m['rustc']}; Python {m['python']}",
        f"- **CPU:** {m['cpu']}, {m['cores']} cores; flags: {m['flags']}",
        f"- **RAM:** {m['ram_gib']} GiB; **kernel:** {m['kernel']}",
        f"- **Load average (1/5/15 min):** {load0} at the start, {load1} at the end",
        f"- **Peers:** pdqhash {v.get('pdqhash')}, imagehash {v.get('imagehash')}, faiss-cpu {v.get('faiss')},"
        f" Pillow {v.get('PIL')}, numpy {v.get('numpy')}, matplotlib {v.get('matplotlib')}",
    ])


def render(template, fills):
    """Replace {{name}} (a stage's Markdown, commands, machine...) and {{stage.value}} (a figure)
    markers. A figure from a stage that did not run renders as 'n/a' instead of failing."""
    def sub(m):
        key = m.group(1).strip()
        if key in fills:
            return str(fills[key])
        return "n/a"
    return re.sub(r"\{\{([^{}]+)\}\}", sub, template)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small inputs, one pass, 100k matching")
    ap.add_argument("--only", default="", help="comma-separated stages to run")
    ap.add_argument("--skip", default="", help="comma-separated stages to skip")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per measurement (median); --quick: 1")
    ap.add_argument("--matching-sizes", default="",
                    help="entries for matching and store, e.g. 1e6 (default 1e6,1e7; --quick 1e5)")
    ap.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                    help="cargo target directory holding the release binaries")
    ap.add_argument("--bin-dir", help="release binaries already set aside for this run (bench/run does that);"
                    " default: hard links to --target's, made at start")
    ap.add_argument("--vpdq-reference", help="Meta's vpdq-hash-video for the video stage (default:"
                    " $BAKEN_VPDQ_REFERENCE; built as bench/vpdq_conformance.py says; absent: Baken alone)")
    ap.add_argument("--vpdq-samples", help="a folder of Meta's sample videos (ThreatExchange tmk/sample-videos)"
                    " hashed in the video stage besides the generated ones")
    ap.add_argument("--out", help="document to write (default docs/benchmarks.md; --quick: under bench/results/quick)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    skip = [s for s in args.skip.split(",") if s]
    for s in only + skip:
        if s not in STAGES:
            ap.error(f"unknown stage {s!r}; stages: {', '.join(STAGES)}")
    selected = [s for s in STAGES if (not only or s in only) and s not in skip]

    results = os.path.join(BENCH, "results", "quick") if args.quick else os.path.join(BENCH, "results")
    out = args.out or (os.path.join(results, "benchmarks.md") if args.quick else os.path.join(ROOT, "docs", "benchmarks.md"))
    os.makedirs(results, exist_ok=True)
    # Scratch space (stores of up to 10M entries, matching dumps) on the big disk, removed at exit.
    tmp = tempfile.mkdtemp(prefix="baken-suite-", dir=os.environ.get("BAKEN_SUITE_TMP", "/var/tmp"))
    # Hard links to the binaries: other worktrees build into the same target directory, and a
    # build finishing mid-run must not swap a binary under a stage (cargo replaces files, so the
    # linked inodes stay as they were).
    bins = os.path.abspath(args.bin_dir) if args.bin_dir else os.path.join(tmp, "bin")
    for b in [] if args.bin_dir else BINARIES + OPTIONAL_BINARIES:
        src, dst = os.path.join(args.target, "release", b), os.path.join(bins, b)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(src):
            if b in OPTIONAL_BINARIES:
                continue
            sys.exit(f"{src} missing: build first (bench/run does): cargo build --release --bin baken --examples")
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    command = os.environ.get("BAKEN_SUITE_COMMAND") or " ".join(["python", "bench/suite.py"] + sys.argv[1:])
    start, load0, t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), loadavg(), time.time()
    m = machine()
    ctx = Ctx(args, bins, results, tmp, os.path.dirname(os.path.abspath(out)))
    fills, summary, failed = {}, [], []
    try:
        for name in STAGES:
            r = Result()
            if name not in selected:
                r.skipped = "not selected in this run (`--only`/`--skip`)"
            else:
                print(f"[{time.strftime('%H:%M:%S')}] stage {name}", file=sys.stderr, flush=True)
                ctx.commands = []
                ts, snap = time.time(), cpu_snapshot()
                try:
                    r = globals()[f"stage_{name}"](ctx)
                except Skip as e:
                    r = Result(skipped=str(e))
                except Exception as e:  # a broken stage must not cost the others' figures
                    failed.append(name)
                    print(f"stage {name} failed: {e!r}", file=sys.stderr)
                    r = Result(skipped=f"**failed** ({type(e).__name__}: {str(e).splitlines()[0][:300]})")
                r.seconds = time.time() - ts
                r.others = others_cores(snap, cpu_snapshot())
                r.commands = ctx.commands
                print(f"[{time.strftime('%H:%M:%S')}] stage {name}: "
                      f"{'skipped: ' + r.skipped if r.skipped else f'{r.seconds:.0f} s'}", file=sys.stderr, flush=True)
            if r.skipped:
                fills[name] = f"*Stage `{name}` skipped: {r.skipped}.*"
                fills[f"{name}.commands"] = ""
            else:
                fills[name] = r.markdown
                cmds = "\n".join(r.commands)
                if len(r.commands) <= 6:
                    fills[f"{name}.commands"] = f"Produced by stage `{name}` ({r.seconds:.0f} s) with:\n\n```sh\n{cmds}\n```"
                else:  # collapsed: the hashing stage alone runs ~70 commands
                    fills[f"{name}.commands"] = (f"<details><summary>Produced by stage <code>{name}</code> ({r.seconds:.0f} s)"
                                                 f" with these {len(r.commands)} commands</summary>\n\n```sh\n{cmds}\n```\n\n</details>")
            for k, v in r.values.items():
                fills[f"{name}.{k}"] = v
            summary.append([f"`{name}`", "skipped: " + r.skipped if r.skipped else f"{r.seconds:.0f} s",
                            "–" if r.skipped else f"{r.others:.2f} of {ctx.cores}"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    end, load1 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), loadavg()
    fills["machine"] = machine_md(m, start, end, load0, load1, time.time() - t0, command)
    fills["command"] = command
    fills["stages"] = md_table(["stage", "time", "cores kept busy by other processes meanwhile (mean)"], summary)
    fills["results"] = os.path.relpath(results, ROOT)
    with open(TEMPLATE) as f:
        # The template's leading comment is for its editors; the document gets its own.
        template = re.sub(r"\A<!--.*?-->\n", "", f.read(), flags=re.S)
    doc = ("<!-- Generated by bench/suite.py from bench/benchmarks.md.in: edit the template, not this file. -->\n"
           + render(template, fills))
    with open(out, "w") as f:
        f.write(doc)
    with open(os.path.join(results, "machine.json"), "w") as f:
        json.dump(dict(m, start=start, end=end, load_start=load0, load_end=load1, command=command,
                       wall_s=round(time.time() - t0)), f, indent=1)
    print(f"wrote {os.path.relpath(out, ROOT)} and {os.path.relpath(results, ROOT)}/ in {(time.time() - t0) / 60:.1f} min",
          file=sys.stderr)
    if failed:
        sys.exit(f"failed stages: {', '.join(failed)}")


if __name__ == "__main__":
    main()
