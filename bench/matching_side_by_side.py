"""PDQ matching side by side: Baken's index vs faiss-cpu IndexBinaryFlat (range search) and
IndexBinaryMultiHash, one thread each, same data, same queries, same run.

    cargo build --release --example matching_scale
    python3 bench/matching_side_by_side.py --n 1000000 --n 10000000 [--queries 300] [--store]

A query is one PDQ hash with its 8 dihedral variants at radius 31 (the match threshold): faiss
answers it as a range search over 8 query vectors. Recall is measured against exact brute force
(Baken's answer, itself checked against numpy on a sample). Prints a Markdown table.
Needs `pip install faiss-cpu numpy`.
"""
import argparse, json, os, subprocess, sys, tempfile, time

import numpy as np
import faiss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EXE = os.path.join(TARGET, "release", "examples", "matching_scale")
RADIUS = 31


def load(d, n, nq):
    e = np.fromfile(os.path.join(d, "entries.bin"), dtype=np.uint8).reshape(n, 32)
    q = np.fromfile(os.path.join(d, "queries.bin"), dtype=np.uint8).reshape(nq * 8, 32)
    truth = []
    with open(os.path.join(d, "hits.txt")) as f:
        for line in f:
            truth.append({int(a): int(b) for a, b in (p.split(":") for p in line.split())})
    return e, q, truth


def check_truth(e, q, truth, sample=5):
    """Exact brute force with numpy on a few queries: Baken's answer must equal it."""
    pop = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1)
    for i in range(sample):
        d = pop[np.bitwise_xor(e[None, :, :], q[i * 8:(i + 1) * 8, None, :])].sum(2).min(0)
        want = {int(j): int(d[j]) for j in np.nonzero(d <= RADIUS)[0]}
        assert want == truth[i], f"query {i}: baken {truth[i]} numpy {want}"


def faiss_run(index, q, nq):
    got = []
    t = time.perf_counter()
    for i in range(nq):
        lims, D, I = index.range_search(q[i * 8:(i + 1) * 8], RADIUS + 1)  # faiss: distance < r
        hits = {}
        for j, dist in zip(I.tolist(), D.tolist()):
            hits[j] = min(dist, hits.get(j, 999))
        got.append(hits)
    return time.perf_counter() - t, got


def recall(got, truth):
    want = sum(len(t) for t in truth)
    found = sum(len(set(g) & set(t)) for g, t in zip(got, truth))
    return 1.0 if want == 0 else found / want


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--store", action="store_true")
    a = ap.parse_args()
    faiss.omp_set_num_threads(1)
    rows = []
    for n in a.n or [1_000_000]:
        with tempfile.TemporaryDirectory() as d:
            cmd = [EXE, "--n", str(n), "--queries", str(a.queries), "--dump", d] + (["--store"] if a.store else [])
            b = json.loads(subprocess.run(["taskset", "-c", "1"] + cmd, check=True, capture_output=True, text=True).stdout)
            e, q, truth = load(d, n, a.queries)
        check_truth(e, q, truth)
        res = {"n": n, "baken": b}
        for name, make in (("flat", lambda: faiss.IndexBinaryFlat(256)),
                           ("multihash", lambda: faiss.IndexBinaryMultiHash(256, 16, 16))):
            t = time.perf_counter()
            idx = make()
            if name == "multihash":
                idx.nflip = 1  # 16 tables of 16 bits, 1-bit probes: exact up to radius 31
            idx.add(e)
            build = time.perf_counter() - t
            secs, got = faiss_run(idx, q, a.queries)
            res[name] = {"build_s": build, "qps": a.queries / secs, "recall": recall(got, truth)}
            del idx
        rows.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    print("| entries | Baken mih q/s | Baken scan q/s | faiss flat q/s | faiss multihash q/s | mih ÷ flat | scan ÷ flat | mih ÷ multihash | recall Baken / flat / multihash | build s mih / scan / flat / multihash | RAM mih / scan (× raw hashes) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, f, m = r["baken"], r["flat"], r["multihash"]
        mi, sc, raw = b["mih"], b["scan"], b["raw_hash_mb"]
        print(f"| {r['n']:,} | {mi['queries_per_s']:.1f} | {sc['queries_per_s']:.1f} | {f['qps']:.2f} | {m['qps']:.1f} | "
              f"{mi['queries_per_s'] / f['qps']:.1f}× | {sc['queries_per_s'] / f['qps']:.1f}× | "
              f"{mi['queries_per_s'] / m['qps']:.1f}× | "
              f"1.000 / {f['recall']:.3f} / {m['recall']:.3f} | "
              f"{mi['index_build_s']:.2f} / {sc['index_build_s']:.2f} / {f['build_s']:.2f} / {m['build_s']:.2f} | "
              f"{mi['index_mb']:.0f} MB ({mi['index_mb'] / raw:.2f}×) / {sc['index_mb']:.0f} MB ({sc['index_mb'] / raw:.2f}×) |")
    if a.store:
        print("\n| entries | import entries/s | cold start s | matcher q/s | matcher RSS growth MB |")
        print("|---|---|---|---|---|")
        for r in rows:
            s = r["baken"]["store"]
            print(f"| {r['n']:,} | {s['import_entries_per_s']:,.0f} | {s['cold_start_s']:.2f} | "
                  f"{s['matcher_queries_per_s']:.1f} | {s['matcher_rss_growth_mb']:.0f} |")


if __name__ == "__main__":
    main()
