"""PDQ matching side by side: Baken's index vs faiss-cpu IndexBinaryFlat (range search) and
IndexBinaryMultiHash, one thread each, same data, same queries, same run. Used by the `matching`
stage of bench/suite.py (`measure`); runnable alone:

    cargo build --release --example matching_scale
    python3 bench/matching_side_by_side.py --n 1000000 --n 10000000 [--queries 300]

A query is one PDQ hash with its 8 dihedral variants at radius 31 (the match threshold): faiss
answers it as a range search over 8 query vectors. Recall is measured against exact brute force
(Baken's answer, itself checked against numpy on a sample). Prints JSON lines.
Needs faiss-cpu and numpy (bench/setup).
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
    """Exact brute force with numpy on a few queries: Baken's answer must equal it. One variant
    at a time with a uint8 popcount table: temporaries stay at n×32 bytes (320 MB at 10M), where
    all 8 variants at once with numpy's default int64 would take 20 GB."""
    pop = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)
    for i in range(sample):
        d = None
        for v in q[i * 8:(i + 1) * 8]:
            dv = pop[np.bitwise_xor(e, v)].sum(1, dtype=np.uint16)
            d = dv if d is None else np.minimum(d, dv)
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


def rss_mb():
    """This process's resident set (MB), from /proc: what a faiss index adds is measured as growth."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(n, queries, exe=EXE, core=1, multihash=True, tmp=None, log=None):
    """One size: Baken (matching_scale pinned to `core`) then faiss (one OpenMP thread) on the
    same entries and queries. Returns {"n", "baken": matching_scale's JSON, "flat": {...},
    "multihash": {...}}; faiss entries hold build_s, qps, recall and index_mb (RSS growth)."""
    faiss.omp_set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        cmd = ["taskset", "-c", str(core), exe, "--n", str(n), "--queries", str(queries), "--dump", d]
        if log:
            log(cmd)
        b = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        e, q, truth = load(d, n, queries)
    check_truth(e, q, truth)
    res = {"n": n, "queries": queries, "baken": b}
    kinds = [("flat", lambda: faiss.IndexBinaryFlat(256))]
    if multihash:
        kinds.append(("multihash", lambda: faiss.IndexBinaryMultiHash(256, 16, 16)))
    for name, make in kinds:
        rss0 = rss_mb()
        t = time.perf_counter()
        idx = make()
        if name == "multihash":
            idx.nflip = 1  # 16 tables of 16 bits, 1-bit probes: exact up to radius 31
        idx.add(e)
        build = time.perf_counter() - t
        index_mb = rss_mb() - rss0
        secs, got = faiss_run(idx, q, queries)
        res[name] = {"build_s": build, "qps": queries / secs, "recall": recall(got, truth), "index_mb": index_mb}
        del idx
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append")
    ap.add_argument("--queries", type=int, default=300)
    a = ap.parse_args()
    for n in a.n or [1_000_000]:
        print(json.dumps(measure(n, a.queries)), flush=True)


if __name__ == "__main__":
    main()
