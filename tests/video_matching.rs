//! vPDQ matching on videos the test makes: a listed video and its re-encode, trim, speed
//! change, letterboxed and unrelated copies, each through the real data path (bytes → frames
//! → index → per-list rule) and checked against `vpdq::match_brute`, python-threatexchange's
//! rule computed pair by pair. Also: a frame matching an image list, a video file's MD5 against
//! an exact list, removal by external id, snapshots, both index kinds and unusable videos.

mod common;

use std::sync::Arc;

use baken::decode::DecodeLimits;
use baken::decode::video::VideoLimits;
use baken::engine::Engine;
use baken::hashing::vpdq::{self, VpdqFeature, hash_video};
use baken::hashing::{PdqMode, exact};
use baken::index::{IndexKind, Match, MatchConfig, Matcher};
use baken::store::import::{self, Format};
use baken::store::{NewList, Store, VideoRule};
use common::video::{ffmpeg, slide_pdq, slideshow, write};

/// (case, bytes, must match on `videos`, must match on `strict`; `None`: whatever the rule says)
type Case = (&'static str, Vec<u8>, Option<bool>, Option<bool>);

const H264: &[&str] = &["-c:v", "libx264", "-pix_fmt", "yuv420p"];

fn frames(bytes: &[u8]) -> Vec<VpdqFeature> {
    hash_video(bytes, &VideoLimits::default(), 1.0).unwrap().1
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
}

fn store_with(videos: &[(&str, &[VpdqFeature])], strict: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let mut lists = vec![("videos", VideoRule::default())];
    if strict {
        lists.push((
            "strict",
            VideoRule {
                query_match_percent: 80.0,
                compared_match_percent: 80.0,
            },
        ));
    }
    for (name, rule) in lists {
        store
            .create_list(
                NewList {
                    name: name.into(),
                    video: rule,
                    ..NewList::default()
                },
                "tester",
            )
            .unwrap();
        for (id, features) in videos {
            let text = vpdq::to_meta(features);
            let (r, _) = import::import_as(
                &store,
                name,
                Format::Vpdq,
                text.as_bytes(),
                "test",
                Some(id),
                "tester",
            )
            .unwrap();
            assert_eq!(r.counts.errors, 0);
        }
    }
    Setup { _dir: dir, store }
}

fn engine(store: &Arc<Store>, config: MatchConfig) -> Engine {
    let m = Matcher::open(store.clone(), config).unwrap();
    Engine::new(Arc::new(m), DecodeLimits::default())
}

fn matches(engine: &Engine, bytes: &[u8]) -> Vec<Match> {
    let hasher = engine.match_hasher(PdqMode::Full).unwrap();
    engine
        .scan(&hasher, bytes.to_vec(), &[])
        .unwrap()
        .result
        .matches
}

fn on<'a>(ms: &'a [Match], list: &str) -> Option<&'a Match> {
    ms.iter()
        .find(|m| m.list == list && m.hash_type.as_str() == "vpdq")
}

#[test]
fn the_rule_on_constructed_copies_agrees_with_the_reference_rule() {
    let original = slideshow(1, 10, "", H264, "orig.mp4");
    let listed = frames(&original);
    assert_eq!(listed.len(), 10);
    let setup = store_with(&[("video-1", &listed)], true);
    let engine = engine(&setup.store, MatchConfig::default());
    let work = tempfile::tempdir().unwrap();
    let original_path = write(work.path(), "o.mp4", &original);
    let original_path = original_path.to_string_lossy();

    // (case, bytes, must match on `videos`, must match on `strict`)
    let cases: Vec<Case> = vec![
        ("identical", original.clone(), Some(true), Some(true)),
        (
            "re-encode vp9, half size",
            ffmpeg(
                &[
                    "-i",
                    &original_path,
                    "-vf",
                    "scale=160:120",
                    "-c:v",
                    "libvpx-vp9",
                    "-b:v",
                    "300k",
                ],
                "re.webm",
            ),
            Some(true),
            Some(true),
        ),
        // The first half: all its frames are in the listed video, half the listed frames are
        // in it — a match at the default compared share (0), none where the list wants 80 %.
        (
            "trim to 5 s",
            slideshow(1, 5, "", H264, "trim.mp4"),
            Some(true),
            Some(false),
        ),
        (
            "2x speed",
            slideshow(
                1,
                10,
                "setpts=0.5*PTS",
                &[&["-r", "25"], H264].concat(),
                "fast.mp4",
            ),
            Some(true),
            Some(false),
        ),
        // PDQ is not letterbox-invariant (issue 14): whatever the verdict, it is the rule's.
        (
            "letterbox",
            slideshow(1, 10, "pad=320:320:0:40", H264, "lb.mp4"),
            None,
            None,
        ),
        (
            "unrelated",
            slideshow(7, 10, "", H264, "other.mp4"),
            Some(false),
            Some(false),
        ),
    ];
    for (case, bytes, on_default, on_strict) in cases {
        let query = frames(&bytes);
        let oracle = vpdq::match_brute(&query, &listed, 31, 50).unwrap();
        let got = matches(&engine, &bytes);
        for (list, rule, want) in [
            ("videos", VideoRule::default(), on_default),
            (
                "strict",
                VideoRule {
                    query_match_percent: 80.0,
                    compared_match_percent: 80.0,
                },
                on_strict,
            ),
        ] {
            let verdict = oracle.query_percent >= rule.query_match_percent
                && oracle.compared_percent >= rule.compared_match_percent;
            let m = on(&got, list);
            assert_eq!(
                m.is_some(),
                verdict,
                "{case} on {list}: Baken {m:?} vs the reference rule {oracle:?}"
            );
            if let Some(want) = want {
                assert_eq!(verdict, want, "{case} on {list}: {oracle:?}");
            }
            if let Some(m) = m {
                let v = m.video.as_ref().unwrap();
                assert_eq!(v.query_match_percent, Some(oracle.query_percent), "{case}");
                assert_eq!(
                    v.compared_match_percent,
                    Some(oracle.compared_percent),
                    "{case}"
                );
                assert_eq!(m.entry, "video-1");
                assert_eq!(m.media_type.as_deref(), Some("video"));
                assert!(m.distance <= 31);
                assert!(!v.timestamps.is_empty());
                assert!(v.timestamps.windows(2).all(|w| w[0] < w[1]));
            }
        }
        eprintln!("{case}: {oracle:?}");
    }
}

#[test]
fn a_frame_matches_an_image_list_and_the_file_an_exact_list() {
    let video = slideshow(2, 6, "", H264, "v.mp4");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    for name in ["images", "files"] {
        store
            .create_list(
                NewList {
                    name: name.into(),
                    ..NewList::default()
                },
                "tester",
            )
            .unwrap();
    }
    // The still shown from second 3 to 4, hashed as an image (not from the video).
    let pdq = slide_pdq(2, 3);
    let csv = format!(
        "pdq,{pdq},A1,still-3\nmd5,{},A1,file-1\n",
        exact::md5_hex(&video)
    );
    for (list, line) in ["images", "files"].iter().zip(csv.lines()) {
        import::import(&store, list, Format::Csv, line.as_bytes(), "t", "tester").unwrap();
    }
    let engine = engine(&store, MatchConfig::default());
    let got = matches(&engine, &video);
    let img = got.iter().find(|m| m.list == "images").unwrap();
    assert_eq!(img.entry, "still-3");
    assert_eq!(img.hash_type.as_str(), "pdq");
    assert_eq!(img.transform, None);
    let v = img.video.as_ref().unwrap();
    assert_eq!(v.timestamps, vec![3.0]);
    assert_eq!(v.query_match_percent, None);
    let file = got.iter().find(|m| m.list == "files").unwrap();
    assert_eq!((file.entry.as_str(), file.distance), ("file-1", 0));
    // Another video shows no listed still.
    assert!(matches(&engine, &slideshow(3, 6, "", H264, "w.mp4")).is_empty());
}

#[test]
fn removal_snapshots_and_index_kinds_keep_the_answer() {
    let a = slideshow(4, 8, "", H264, "a.mp4");
    let b = slideshow(5, 8, "", H264, "b.mp4");
    let (fa, fb) = (frames(&a), frames(&b));
    let setup = store_with(&[("a", &fa), ("b", &fb)], false);
    let names = |ms: Vec<Match>| {
        let mut v: Vec<String> = ms
            .into_iter()
            .filter(|m| m.hash_type.as_str() == "vpdq")
            .map(|m| m.entry)
            .collect();
        v.sort();
        v
    };
    for kind in [IndexKind::Scan, IndexKind::MultiIndex] {
        let cfg = MatchConfig {
            index: kind,
            ..MatchConfig::default()
        };
        let e = engine(&setup.store, cfg.clone());
        assert_eq!(names(matches(&e, &a)), ["a"], "{kind:?}");
        assert_eq!(names(matches(&e, &b)), ["b"], "{kind:?}");
        // From a snapshot file (the frame rows and video ids round-trip).
        let m = Matcher::open(setup.store.clone(), cfg.clone()).unwrap();
        m.write_snapshots().unwrap();
        let m = Matcher::open(setup.store.clone(), cfg.clone()).unwrap();
        assert!(m.snapshot().lists.values().all(|l| l.from_snapshot));
        let e = Engine::new(Arc::new(m), DecodeLimits::default());
        assert_eq!(names(matches(&e, &a)), ["a"], "{kind:?} from snapshot");
    }
    // Removing a video by its external id removes all its frames, also on top of a snapshot
    // (the delta path), and the listed frame count follows.
    let m = Arc::new(
        Matcher::open(
            setup.store.clone(),
            MatchConfig {
                snapshot_min_entries: Some(0),
                ..MatchConfig::default()
            },
        )
        .unwrap(),
    );
    let mut change = setup
        .store
        .begin("videos", "tester", "list.remove")
        .unwrap();
    assert_eq!(
        change.tombstone_external("a", "test").unwrap(),
        fa.len() as u64
    );
    change.commit(None).unwrap();
    m.refresh().unwrap();
    let e = Engine::new(m.clone(), DecodeLimits::default());
    assert!(names(matches(&e, &a)).is_empty());
    assert_eq!(names(matches(&e, &b)), ["b"]);
}

#[test]
fn a_video_without_usable_frames_is_skipped_and_bad_vpdq_files_are_refused() {
    let flat = ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=gray:size=160x120:rate=10:duration=3",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
        ],
        "flat.mp4",
    );
    let listed = frames(&slideshow(6, 4, "", H264, "l.mp4"));
    let setup = store_with(&[("x", &listed)], false);
    let e = engine(&setup.store, MatchConfig::default());
    let hasher = e.match_hasher(PdqMode::Full).unwrap();
    let out = e.scan(&hasher, flat, &[]).unwrap();
    assert!(out.result.matches.is_empty());
    assert!(
        out.result
            .skipped
            .iter()
            .any(|s| s.hash_type.as_str() == "vpdq" && s.reason.contains("quality")),
        "{:?}",
        out.result.skipped
    );
    // Import: the file is refused whole with where and why; nothing is written.
    let bad = [
        ("0,100,zz,0.000\n", "line 1"),
        ("0,100\n", "line 1"),
        ("[\"abc,100,0.0\"]", "input"),
        (
            "0,10,0000000000000000000000000000000000000000000000000000000000000000,0.000\n",
            "input",
        ),
    ];
    for (text, at) in bad {
        let err = import::import_as(
            &setup.store,
            "videos",
            Format::Vpdq,
            text.as_bytes(),
            "t",
            Some("bad"),
            "tester",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(at) && msg.contains("nothing was imported"),
            "{msg}"
        );
    }
    assert_eq!(
        setup.store.list("videos").unwrap().live_entries,
        listed.len() as u64
    );
    // The signal form imports the same rows as the file form (re-import: nothing added).
    let (r, _) = import::import_as(
        &setup.store,
        "videos",
        Format::Vpdq,
        vpdq::to_signal(&listed).as_bytes(),
        "t",
        Some("x"),
        "tester",
    )
    .unwrap();
    assert_eq!(r.counts.added, 0);
    assert_eq!(r.counts.errors, 0);
    assert_eq!(
        setup.store.list("videos").unwrap().live_entries,
        listed.len() as u64
    );
}
