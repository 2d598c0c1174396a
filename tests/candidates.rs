//! Query-side candidates (issue 14) as a user meets them: a PDQ list of originals, copies of
//! those originals inside borders (letterbox, pillarbox, padding; black, white, grey, coloured),
//! and unrelated pictures inside the same borders, through `baken match --candidates border`.
//! Plus rotated copies (deskew) and copies inside a screenshot-like window (frame), and the
//! report of a candidate match, which names the candidate.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use baken::decode::DecodeLimits;
use baken::engine::Engine;
use baken::hashing::PdqMode;
use baken::hashing::candidates::{BORDER_REMOVED, CandidateOptions, DESKEWED, FRAME_REMOVED};
use baken::index::{MatchConfig, Matcher};
use baken::reports::MatchDetail;
use baken::store::Store;
use common::{baken_at as baken, json_lines, save_png};

/// `img` (w×h RGB) inside bars `[top, bottom, left, right]` of colour `col`.
fn framed(img: &[u8], w: u32, h: u32, bars: [u32; 4], col: [u8; 3]) -> (Vec<u8>, u32, u32) {
    let [t, b, l, r] = bars;
    let (fw, fh) = (w + l + r, h + t + b);
    let mut out = Vec::with_capacity((fw * fh * 3) as usize);
    for y in 0..fh {
        for x in 0..fw {
            if (t..t + h).contains(&y) && (l..l + w).contains(&x) {
                let at = (((y - t) * w + (x - l)) * 3) as usize;
                out.extend_from_slice(&img[at..at + 3]);
            } else {
                out.extend_from_slice(&col);
            }
        }
    }
    (out, fw, fh)
}

const W: u32 = 400;
const H: u32 = 300;

/// The frames the copies are put in: letterbox and pillarbox (16:9 and 4:3 frames around a
/// 4:3 picture), uneven padding, in black, white, grey and a colour.
const FRAMES: [([u32; 4], [u8; 3]); 5] = [
    ([60, 60, 0, 0], [0, 0, 0]),
    ([0, 0, 80, 80], [255, 255, 255]),
    ([20, 20, 20, 20], [128, 128, 128]),
    ([45, 15, 30, 10], [200, 40, 90]),
    ([0, 75, 0, 0], [16, 16, 16]),
];

struct Files {
    originals: Vec<PathBuf>,
    copies: Vec<PathBuf>,
    unrelated: Vec<PathBuf>,
}

fn make_files(dir: &Path) -> Files {
    let mut f = Files {
        originals: Vec::new(),
        copies: Vec::new(),
        unrelated: Vec::new(),
    };
    for seed in 0..4u64 {
        let px = common::generated_image(W, H, 3, 700 + seed);
        let p = dir.join(format!("orig-{seed}.png"));
        save_png(&p, &px, W, H);
        f.originals.push(p);
        let other = common::generated_image(W, H, 3, 900 + seed);
        for (i, (bars, col)) in FRAMES.iter().enumerate() {
            let (c, fw, fh) = framed(&px, W, H, *bars, *col);
            let p = dir.join(format!("copy-{seed}-{i}.png"));
            save_png(&p, &c, fw, fh);
            f.copies.push(p);
            let (u, fw, fh) = framed(&other, W, H, *bars, *col);
            let p = dir.join(format!("unrelated-{seed}-{i}.png"));
            save_png(&p, &u, fw, fh);
            f.unrelated.push(p);
        }
    }
    f
}

/// A list `originals` of the originals' PDQ (and MD5), made with the CLI.
fn list_of(data: &Path, dir: &Path, originals: &[PathBuf]) {
    let out = baken(data)
        .args(["hash", "--algo", "pdq,md5"])
        .args(originals)
        .output()
        .unwrap();
    let mut csv = String::from("hash_type,hash,classification,external_id\n");
    for (i, v) in json_lines(&out.stdout).iter().enumerate() {
        let rows = common::pdq_md5_csv(v, "A1", &format!("orig-{i}"));
        csv.push_str(rows.split_once('\n').unwrap().1);
    }
    let path = dir.join("list.csv");
    std::fs::write(&path, csv).unwrap();
    common::cli_list_from_csv(data, "originals", &["--source", "test"], &path);
}

fn match_lines(data: &Path, files: &[PathBuf], extra: &[&str]) -> Vec<serde_json::Value> {
    let out = baken(data)
        .arg("match")
        .args(extra)
        .args(files)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), files.len());
    lines
}

fn pdq_matches(line: &serde_json::Value) -> Vec<&serde_json::Value> {
    line["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["hash_type"] == "pdq")
        .collect()
}

#[test]
fn bordered_copies_match_through_the_border_removed_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files = make_files(dir.path());
    list_of(&data, dir.path(), &files.originals);

    // Plain PDQ misses most bordered copies: that is what the candidate is for.
    let plain = match_lines(&data, &files.copies, &[]);
    let plain_hits = plain.iter().filter(|l| !pdq_matches(l).is_empty()).count();
    assert!(
        plain_hits * 2 < files.copies.len(),
        "plain PDQ found {plain_hits} of {} bordered copies",
        files.copies.len()
    );

    let with = match_lines(&data, &files.copies, &["--candidates", "border"]);
    for (i, (line, path)) in with.iter().zip(&files.copies).enumerate() {
        let m = pdq_matches(line);
        assert_eq!(m.len(), 1, "{}: {line}", path.display());
        assert_eq!(m[0]["entry"], format!("orig-{}", i / FRAMES.len()));
        if pdq_matches(&plain[i]).is_empty() {
            assert_eq!(m[0]["candidate"], BORDER_REMOVED, "{line}");
            // Under the candidate threshold, not the list's 31.
            assert!(m[0]["threshold"].as_u64().unwrap() <= 24, "{line}");
        }
        // The removed border is exact here (flat bars, lossless): the very original's hash.
        if m[0]["candidate"] == BORDER_REMOVED {
            assert_eq!(m[0]["distance"], 0, "{line}");
        }
    }

    // The originals still match as themselves: the image's own match wins, no candidate.
    for line in match_lines(&data, &files.originals, &["--candidates", "border"]) {
        let m = pdq_matches(&line);
        assert_eq!(m.len(), 1, "{line}");
        assert!(m[0].get("candidate").is_none(), "{line}");
        assert_eq!(m[0]["distance"], 0);
    }

    // Unrelated pictures in the very same borders: no match, candidates or not.
    for line in match_lines(&data, &files.unrelated, &["--candidates", "border"]) {
        assert!(line["matches"].as_array().unwrap().is_empty(), "{line}");
    }

    // Asking for an unknown candidate is a usage error naming the known ones.
    let bad = baken(&data)
        .args(["match", "--candidates", "crop"])
        .arg(&files.copies[0])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("border"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `img` (w×h RGB) rotated `deg` counter-clockwise as seen about its centre on the same
/// canvas, bilinear, corners black: what an image editor's "rotate" without "expand" gives.
fn rotated(img: &[u8], w: u32, h: u32, deg: f64) -> Vec<u8> {
    let (w, h) = (w as usize, h as usize);
    let (s, c) = deg.to_radians().sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let sx = dx * c - dy * s + cx;
            let sy = dx * s + dy * c + cy;
            if sx < 0.0 || sy < 0.0 || sx > (w - 1) as f64 || sy > (h - 1) as f64 {
                continue;
            }
            let (x0, y0) = (sx as usize, sy as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
            for ch in 0..3 {
                let p = |x: usize, y: usize| f64::from(img[(y * w + x) * 3 + ch]);
                let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
                let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
                out[(y * w + x) * 3 + ch] = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
        }
    }
    out
}

/// `img` shown in a window: a dark title bar with tabs, a light side panel, a status bar.
fn windowed(img: &[u8], w: u32, h: u32) -> (Vec<u8>, u32, u32) {
    let (w, h) = (w as usize, h as usize);
    let (cw, ch) = (w * 5 / 4, h * 3 / 2);
    let (bar, status, side) = (ch / 12, ch / 20, w / 5);
    let (px, py) = (side + 8, bar + 12);
    let mut out = Vec::with_capacity(cw * ch * 3);
    for y in 0..ch {
        for x in 0..cw {
            let col: [u8; 3] = if y < bar {
                if y > bar / 3 && (x * 7 / cw) % 2 == 1 {
                    [80, 80, 86]
                } else {
                    [45, 45, 48]
                }
            } else if y >= ch - status {
                [220, 220, 224]
            } else if x < side {
                [232, 232, 236]
            } else {
                [242, 242, 242]
            };
            out.extend_from_slice(&col);
        }
    }
    for y in 0..h {
        let at = ((py + y) * cw + px) * 3;
        out[at..at + w * 3].copy_from_slice(&img[y * w * 3..(y + 1) * w * 3]);
    }
    (out, cw as u32, ch as u32)
}

#[test]
fn rotated_and_windowed_copies_match_through_deskew_and_frame() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut originals, mut copies, mut unrelated) = (Vec::new(), Vec::new(), Vec::new());
    let mut expect = Vec::new();
    for seed in 0..3u64 {
        let px = common::generated_image(W, H, 3, 700 + seed);
        let p = dir.path().join(format!("orig-{seed}.png"));
        save_png(&p, &px, W, H);
        originals.push(p);
        let other = common::generated_image(W, H, 3, 900 + seed);
        for (i, deg) in [3.0, -4.0, 6.0].into_iter().enumerate() {
            for (pic, out, kind) in [
                (&px, &mut copies, "copy"),
                (&other, &mut unrelated, "other"),
            ] {
                let p = dir.path().join(format!("rot-{kind}-{seed}-{i}.png"));
                save_png(&p, &rotated(pic, W, H, deg), W, H);
                out.push(p);
            }
            expect.push((seed, DESKEWED));
        }
        for (pic, out, kind) in [
            (&px, &mut copies, "copy"),
            (&other, &mut unrelated, "other"),
        ] {
            let (s, sw, sh) = windowed(pic, W, H);
            let p = dir.path().join(format!("win-{kind}-{seed}.png"));
            save_png(&p, &s, sw, sh);
            out.push(p);
        }
        expect.push((seed, FRAME_REMOVED));
    }
    list_of(&data, dir.path(), &originals);
    let plain = match_lines(&data, &copies, &[]);
    assert!(
        plain.iter().all(|l| pdq_matches(l).is_empty()),
        "plain PDQ already finds some: {plain:?}"
    );
    let all = ["--candidates", "border,frame,deskew"];
    for (line, (seed, candidate)) in match_lines(&data, &copies, &all).iter().zip(&expect) {
        let m = pdq_matches(line);
        assert_eq!(m.len(), 1, "{line}");
        assert_eq!(m[0]["entry"], format!("orig-{seed}"), "{line}");
        assert_eq!(m[0]["candidate"], *candidate, "{line}");
        assert!(m[0]["distance"].as_u64().unwrap() <= 24, "{line}");
    }
    for line in match_lines(&data, &unrelated, &all) {
        assert!(line["matches"].as_array().unwrap().is_empty(), "{line}");
    }

    // `baken hash` shows the views: the deskewed one with the angle it undid.
    let out = baken(&data)
        .args(["hash", "--algo", "pdq", "--candidates", "deskew"])
        .arg(&copies[1])
        .output()
        .unwrap();
    let v = &json_lines(&out.stdout)[0];
    let c = &v["candidates"][0];
    assert_eq!(c["name"], DESKEWED, "{v}");
    let angle = c["angle"].as_f64().unwrap();
    assert!((angle + 4.0).abs() < 0.3, "{v}");
}

#[test]
fn a_candidate_match_names_its_candidate_in_the_report_and_respects_its_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files = make_files(dir.path());
    list_of(&data, dir.path(), &files.originals[..1]);
    let copy = std::fs::read(&files.copies[0]).unwrap();
    let store = Arc::new(Store::open(&data).unwrap());

    let engine = |config: MatchConfig, candidates: CandidateOptions| {
        let m = Matcher::open(store.clone(), config).unwrap();
        Engine::new(Arc::new(m), DecodeLimits::default()).with_candidates(candidates)
    };
    let scan = |e: &Engine| {
        let hasher = e.match_hasher(PdqMode::Full).unwrap();
        e.scan(&hasher, copy.clone(), &[]).unwrap()
    };

    let on = engine(MatchConfig::default(), CandidateOptions::all());
    let outcome = scan(&on);
    let m = &outcome.result.matches;
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].candidate, Some(BORDER_REMOVED));
    // The candidate's region is the picture inside the letterbox.
    let c = &outcome.hashes.candidates;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].region, [0, 60, W as usize, 60 + H as usize]);
    let detail = MatchDetail::from(&m[0]);
    assert_eq!(detail.candidate.as_deref(), Some(BORDER_REMOVED));
    let json = serde_json::to_value(&detail).unwrap();
    assert_eq!(json["candidate"], BORDER_REMOVED);

    // Off: the copy is not matched. A quality floor above the view's quality: not either.
    let off = engine(MatchConfig::default(), CandidateOptions::default());
    assert!(scan(&off).result.matches.is_empty());
    let picky = engine(
        MatchConfig {
            candidate_quality_floor: 101,
            ..MatchConfig::default()
        },
        CandidateOptions::all(),
    );
    let r = scan(&picky).result;
    assert!(r.matches.is_empty() && r.skipped.is_empty(), "{r:?}");
}

/// Over gRPC, against a real server on 127.0.0.1 configured with `[matching] candidates =
/// ["border"]`: the bordered copy matches and the `Match` names the candidate, from the image
/// or from the view's hash alone (MatchHashes, `baken scan --server`); a server configured
/// with an unknown candidate refuses to start, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_matches_through_candidates_its_configuration_names() {
    use baken::service::{self, pb};
    use common::service::{channel, create_list, import_csv, start, test_config};
    use pb::list_service_client::ListServiceClient;
    use pb::scan_service_client::ScanServiceClient;

    let px = common::generated_image(W, H, 3, 700);
    let original = common::rgb_png(&px, W, H);
    let (c, fw, fh) = framed(&px, W, H, FRAMES[0].0, FRAMES[0].1);
    let copy = common::rgb_png(&c, fw, fh);

    let (running, _dir) = start(|c| c.matching.candidates = vec!["border".into()]).await;
    let ch = channel(running.addr).await;
    let mut lists = ListServiceClient::new(ch.clone());
    let mut scan = ScanServiceClient::new(ch);
    let hashed = scan
        .hash_image(pb::HashRequest {
            image: original,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    create_list(&mut lists, "originals", None).await;
    let csv = format!(
        "hash_type,hash,classification,external_id\npdq,{},A1,orig-0\n",
        hashed.pdq.unwrap().hash
    );
    import_csv(&mut lists, "originals", &csv, None)
        .await
        .unwrap();
    let r = scan
        .scan(pb::ScanRequest {
            image: copy,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let m = &r.result.as_ref().unwrap().matches;
    assert_eq!(m.len(), 1, "{r:?}");
    assert_eq!(
        (m[0].entry.as_str(), m[0].candidate.as_str()),
        ("orig-0", BORDER_REMOVED)
    );
    assert!(m[0].threshold <= 24);

    // Hash-only: the caller derives the view and sends its PDQ named as a candidate; it is
    // matched under the candidate threshold and the match names it. Unnamed, the same hash
    // is an ordinary PDQ under the list's threshold; a name that is not a view is refused.
    let views = baken::hashing::candidates::hash_candidates(
        baken::hashing::pdq::PixelView {
            width: fw as usize,
            height: fh as usize,
            channels: 3,
            data: &c,
        },
        &CandidateOptions::all(),
        PdqMode::Full,
    );
    let view = &views[0];
    let value = |candidate: &str| pb::HashValue {
        r#type: "pdq".into(),
        value: view.hash.hash.to_hex(),
        quality: Some(u32::from(view.hash.quality)),
        dihedral: view.hash.dihedral[1..].iter().map(|h| h.to_hex()).collect(),
        candidate: candidate.into(),
    };
    let ask = |candidate: &str| pb::MatchHashesRequest {
        hashes: vec![value(candidate)],
        ..Default::default()
    };
    let r = scan
        .match_hashes(ask(BORDER_REMOVED))
        .await
        .unwrap()
        .into_inner();
    let m = &r.result.as_ref().unwrap().matches;
    assert_eq!(m.len(), 1, "{r:?}");
    assert_eq!(m[0].candidate, BORDER_REMOVED);
    assert!(m[0].threshold <= 24, "{r:?}");
    let r = scan.match_hashes(ask("")).await.unwrap().into_inner();
    let m = &r.result.as_ref().unwrap().matches;
    assert_eq!(
        (m.len(), m[0].candidate.as_str(), m[0].threshold),
        (1, "", 31)
    );
    let e = scan.match_hashes(ask("crop")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("hashes[0]") && e.message().contains("border_removed"),
        "{e:?}"
    );

    // `baken scan --server --candidates border` derives the views on the client and sends
    // hashes only; the server's match names the view.
    let files = tempfile::tempdir().unwrap();
    let copy_path = files.path().join("copy.png");
    save_png(&copy_path, &c, fw, fh);
    let client = files.path().join("client");
    let url = format!("http://{}", running.addr);
    let o = tokio::task::spawn_blocking(move || {
        baken(&client)
            .args(["scan", "--server", &url, "--candidates", "border"])
            .arg(&copy_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    common::assert_exit(&o, 1);
    let lines = json_lines(&o.stdout);
    let item = lines
        .iter()
        .find(|l| l.get("matches").is_some())
        .expect("an item line");
    let m = pdq_matches(item);
    assert_eq!(m.len(), 1, "{item}");
    assert_eq!(m[0]["candidate"], BORDER_REMOVED, "{item}");

    let dir = tempfile::tempdir().unwrap();
    let mut bad = test_config(dir.path());
    bad.matching.candidates = vec!["crop".into()];
    let err = match service::Server::new(bad).start().await {
        Ok(_) => panic!("started with an unknown candidate"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("crop") && err.contains("border"), "{err}");
}
