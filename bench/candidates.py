#!/usr/bin/env python3
"""Query-side candidates (issue 14) through `baken match` as a user runs it, in two folds so that
every shared-corpus photo is a negative once.

Fold A lists the even manifest rows by PDQ and queries the odd rows; fold B the other way round.
Each query photo is matched as it is and after the edits candidates address (robustness.py's
transforms: padding, letterbox, screenshot, caption band, rotations), with and without
`--candidates border,frame,deskew`. A match is false unless the listed photo is the query's own
original or a near-duplicate of it (the manifest's neardup_group). Recall: the listed photos'
own edited copies, matched with candidates. Prints a markdown table.

    bench/setup                                 # prints the venv python
    cargo build --release --bin baken
    /var/tmp/baken-bench-py/bin/python bench/candidates.py [--baken PATH]

Needs ../shared/corpus (read only); images and stores go to a temporary directory.
"""
import argparse, csv, json, os, subprocess, sys, tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import robustness as R  # noqa: E402  (the same transforms as the robustness benchmark)

KINDS = "border,frame,deskew"
EDITS = ["original (PNG)", "pad 10%", "letterbox 9:16 black", "letterbox 1:1 coloured", "screenshot",
         "meme caption", "rotate +4°", "rotate -4°", "rotate +8°"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baken", default=R.BAKEN)
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(R.CORPUS, "manifest.csv")):
        sys.exit(f"candidates: the shared corpus is missing ({os.path.normpath(R.CORPUS)}/manifest.csv)")
    rows = list(csv.DictReader(open(os.path.join(R.CORPUS, "manifest.csv"))))
    transforms = dict(R._transforms())
    tmp = tempfile.TemporaryDirectory(prefix="baken-candidates-")

    def run(data, args):
        r = subprocess.run([a.baken, "--data", data] + args, capture_output=True, text=True)
        if r.returncode not in (0, 1):
            sys.exit(f"baken {' '.join(args[:3])}: {r.stderr[-2000:]}")
        return [json.loads(l) for l in r.stdout.splitlines()]

    def edited(fold, idx, edit):
        paths = []
        for i in idx:
            im = R.load_rgb(os.path.join(R.CORPUS, rows[i]["file"]))
            t = R.TRANSFORM_NAMES.index(edit)
            q, fmt, opts = transforms[edit](im, np.random.default_rng([7, i, t]))
            p = os.path.join(tmp.name, f"{fold}-{i}-{t}.{'jpg' if fmt == 'JPEG' else 'png'}")
            q.save(p, fmt, **opts)
            paths.append(p)
        return paths

    stats = {e: {"pos": 0, "plain": 0, "cand": 0, "neg": 0, "fp_plain": 0, "fp_cand": 0} for e in EDITS}
    for fold, (listed, queries) in {"A": (range(0, len(rows), 2), range(1, len(rows), 2)),
                                    "B": (range(1, len(rows), 2), range(0, len(rows), 2))}.items():
        data = os.path.join(tmp.name, f"data-{fold}")
        hs = run(data, ["hash", "--algo", "pdq"] + [os.path.join(R.CORPUS, rows[i]["file"]) for i in listed])
        lst = os.path.join(tmp.name, f"list-{fold}.csv")
        with open(lst, "w") as f:
            f.write("hash_type,hash,classification,external_id\n")
            for i, h in zip(listed, hs):
                f.write(f"pdq,{h['pdq']['hash']},A1,r{i}\n")
        run(data, ["list", "create", "orig", "--source", "bench"])
        run(data, ["list", "import", "orig", "--format", "csv", lst])

        def group(i):
            return rows[i]["neardup_group"] or f"file:{i}"

        def pdq_hits(lines):
            return [[int(m["entry"][1:]) for m in l.get("matches", []) if m["hash_type"] == "pdq"] for l in lines]

        for edit in EDITS:
            s = stats[edit]
            for idx, positive in ((list(listed), True), (list(queries), False)):
                paths = edited(fold, idx, edit)
                plain = pdq_hits(run(data, ["match"] + paths))
                cand = pdq_hits(run(data, ["match", "--candidates", KINDS] + paths))
                for i, hp, hc in zip(idx, plain, cand):
                    wrong = lambda h: any(group(e) != group(i) for e in h)
                    if positive:
                        s["pos"] += 1
                        s["plain"] += i in hp
                        s["cand"] += i in hc
                    else:
                        s["neg"] += 1
                        s["fp_plain"] += wrong(hp)
                        s["fp_cand"] += wrong(hc)
                for p in paths:
                    os.remove(p)
        print(f"fold {fold} done", file=sys.stderr, flush=True)

    print(f"| edit | listed copies | plain PDQ recall % | with `--candidates {KINDS}` % | negatives | "
          "false matches, plain | false matches, with candidates |")
    print("|---|---|---|---|---|---|---|")
    for e, s in stats.items():
        print(f"| {e} | {s['pos']} | {100 * s['plain'] / s['pos']:.1f} | {100 * s['cand'] / s['pos']:.1f} | "
              f"{s['neg']} | {s['fp_plain']} | {s['fp_cand']} |")
    tot = lambda k: sum(s[k] for s in stats.values())
    print(f"\nEvery photo is a negative once per edit: {tot('neg')} negative queries, {tot('fp_plain')} false "
          f"matches plain, {tot('fp_cand')} with candidates (near-duplicates of a listed photo are not false).")


if __name__ == "__main__":
    main()
