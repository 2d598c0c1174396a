//! The matching index: exact recall against a brute-force oracle (random and real corpus
//! hashes), per-list thresholds, the quality floor, negative lists, live updates.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baken::index::{IndexKind, MatchConfig, Matcher, QueryHash};
use baken::store::import::{self, Format};
use baken::store::{HashType, NewList, Store};

use common::XorShift as Rng;

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

fn new_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    (dir, store)
}

fn create(store: &Store, name: &str, negative: bool, thresholds: &[(&str, u32)]) {
    store
        .create_list(
            NewList {
                name: name.into(),
                negative,
                thresholds: thresholds
                    .iter()
                    .map(|(t, v)| (HashType::new(t).unwrap(), *v))
                    .collect(),
                ..NewList::default()
            },
            "tester",
        )
        .unwrap();
}

fn load(store: &Store, list: &str, ty: &str, hashes: &[Vec<u8>]) {
    let mut csv = Vec::new();
    writeln!(csv, "hash_type,hash,classification,external_id").unwrap();
    for (i, h) in hashes.iter().enumerate() {
        writeln!(csv, "{ty},{},A1,{list}-{i}", hex::encode(h)).unwrap();
    }
    let (r, _) = import::import(store, list, Format::Csv, csv.as_slice(), "gen", "tester").unwrap();
    assert_eq!(r.counts.errors, 0);
}

fn q(ty: &str, variants: Vec<Vec<u8>>, quality: Option<u8>) -> Vec<QueryHash> {
    vec![QueryHash::new(
        HashType::new(ty).unwrap(),
        variants,
        quality,
    )]
}

/// (list, entry hash hex, distance) of everything the matcher returns.
fn got(m: &Matcher, query: &[QueryHash]) -> BTreeSet<(String, String, u32)> {
    m.match_query(query, None)
        .unwrap()
        .matches
        .into_iter()
        .map(|x| (x.list, x.hash, x.distance))
        .collect()
}

/// One matcher per search structure over the same store: both must give the oracle's answer.
fn matchers(store: &Arc<Store>) -> Vec<(IndexKind, Matcher)> {
    [IndexKind::Scan, IndexKind::MultiIndex]
        .into_iter()
        .map(|kind| {
            let cfg = MatchConfig {
                index: kind,
                ..MatchConfig::default()
            };
            (kind, Matcher::open(store.clone(), cfg).unwrap())
        })
        .collect()
}

fn oracle(
    lists: &[(&str, &[Vec<u8>], u32)],
    variants: &[Vec<u8>],
) -> BTreeSet<(String, String, u32)> {
    let mut out = BTreeSet::new();
    for (name, entries, t) in lists {
        for e in entries.iter() {
            let d = variants.iter().map(|v| hamming(e, v)).min().unwrap();
            if d <= *t {
                out.insert((name.to_string(), hex::encode(e), d));
            }
        }
    }
    out
}

#[test]
fn pdq_radius_search_has_exact_recall_on_random_hashes() {
    let (_d, store) = new_store();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let a: Vec<Vec<u8>> = (0..4000).map(|_| rng.bytes(32)).collect();
    let b: Vec<Vec<u8>> = (0..3000).map(|_| rng.bytes(32)).collect();
    create(&store, "a", false, &[]);
    create(&store, "strict", false, &[("pdq", 20)]);
    load(&store, "a", "pdq", &a);
    load(&store, "strict", "pdq", &b);
    let ms = matchers(&store);
    let mut total = 0;
    for i in 0..300 {
        // Near an entry (0..48 bits away) in the original or a dihedral slot, else random.
        let base = if i % 2 == 0 {
            &a[i % a.len()]
        } else {
            &b[i % b.len()]
        };
        let k = (rng.next() % 48) as usize;
        let mut variants: Vec<Vec<u8>> = (0..8).map(|_| rng.bytes(32)).collect();
        variants[i % 8] = rng.flip(base, k);
        let want = oracle(&[("a", &a, 31), ("strict", &b, 20)], &variants);
        for (kind, m) in &ms {
            let have = got(m, &q("pdq", variants.clone(), Some(100)));
            assert_eq!(have, want, "{kind:?}: query {i} (k={k})");
        }
        total += want.len();
    }
    assert!(total > 100, "the test must exercise real hits ({total})");
}

#[test]
fn sixty_four_bit_hashes_use_their_own_threshold() {
    let (_d, store) = new_store();
    let mut rng = Rng(77);
    let e: Vec<Vec<u8>> = (0..2000).map(|_| rng.bytes(8)).collect();
    create(&store, "p", false, &[]);
    load(&store, "p", "phash", &e);
    let ms = matchers(&store);
    for i in 0..200 {
        let v = vec![rng.flip(&e[i], i % 16)];
        let want = oracle(&[("p", &e, 10)], &v);
        for (kind, m) in &ms {
            assert_eq!(
                got(m, &q("phash", v.clone(), None)),
                want,
                "{kind:?}: query {i}"
            );
        }
    }
}

#[test]
fn exact_recall_on_real_corpus_hashes() {
    let Some(shared) = common::shared_dir() else {
        return;
    };
    let rows = common::read_csv(&shared.join("corpus/manifest.csv"));
    let full: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| hex::decode(&r["pdq_full_hex"]).unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (_d, store) = new_store();
    create(&store, "corpus", false, &[]);
    load(&store, "corpus", "pdq", &full);
    let ms = matchers(&store);
    let mut near = 0;
    for r in &rows {
        // The ref512 hash of each photo is a realistic near-duplicate query.
        let v = vec![hex::decode(&r["pdq_ref512_hex"]).unwrap()];
        let want = oracle(&[("corpus", &full, 31)], &v);
        near += want.len();
        for (kind, m) in &ms {
            let have = got(m, &q("pdq", v.clone(), Some(100)));
            assert_eq!(have, want, "{kind:?}: {}", r["file"]);
        }
    }
    assert!(near >= rows.len(), "every photo finds at least itself");
}

#[test]
fn exact_types_quality_floor_and_metadata() {
    let (_d, store) = new_store();
    create(&store, "l", false, &[]);
    let md5 = vec![0xabu8; 16];
    let pdq = vec![0x5au8; 32];
    load(&store, "l", "md5", std::slice::from_ref(&md5));
    load(&store, "l", "pdq", std::slice::from_ref(&pdq));
    let m = Matcher::open(store, MatchConfig::default()).unwrap();
    let r = m
        .match_query(&q("md5", vec![md5.clone()], None), None)
        .unwrap();
    assert_eq!(r.matches.len(), 1);
    let hit = &r.matches[0];
    assert_eq!(
        (hit.list.as_str(), hit.distance, hit.list_version),
        ("l", 0, 2),
        "two imports"
    );
    assert_eq!(hit.classification.as_deref(), Some("A1"));
    assert_eq!(hit.entry, "l-0");
    assert!(
        m.match_query(&q("md5", vec![vec![0xac; 16]], None), None)
            .unwrap()
            .matches
            .is_empty()
    );

    // A low-quality PDQ is not matched, and the answer says why.
    let r = m
        .match_query(&q("pdq", vec![pdq.clone()], Some(20)), None)
        .unwrap();
    assert!(r.matches.is_empty());
    assert!(r.skipped[0].reason.contains("quality 20"));
    let r = m
        .match_query(&q("pdq", vec![vec![1; 32], pdq.clone()], Some(80)), None)
        .unwrap();
    assert_eq!(
        r.matches[0].transform,
        Some("rot90"),
        "second variant is rot90"
    );
}

#[test]
fn negative_lists_suppress_and_say_which_entry() {
    let (_d, store) = new_store();
    create(&store, "known", false, &[]);
    create(&store, "benign", true, &[]);
    let meme = vec![0x0fu8; 32];
    let other = vec![0xf0u8; 32];
    load(&store, "known", "pdq", &[meme.clone(), other.clone()]);
    let mut near_meme = meme.clone();
    near_meme[0] ^= 0b111;
    load(&store, "benign", "pdq", std::slice::from_ref(&near_meme));
    let m = Matcher::open(store, MatchConfig::default()).unwrap();
    let r = m
        .match_query(&q("pdq", vec![meme.clone()], Some(100)), None)
        .unwrap();
    assert!(r.matches.is_empty());
    assert_eq!(r.suppressed.len(), 1);
    assert_eq!(r.suppressed[0].matched.list, "known");
    assert_eq!(r.suppressed[0].by.list, "benign");
    assert_eq!(r.suppressed[0].by.entry, "benign-0");
    assert_eq!(r.suppressed[0].by.distance, 3);
    // Other content is untouched.
    let r = m
        .match_query(&q("pdq", vec![other], Some(100)), None)
        .unwrap();
    assert_eq!(r.matches.len(), 1);
    // Restricting to a list still applies negatives.
    let only = ["known".to_string()];
    let r = m
        .match_query(&q("pdq", vec![meme], Some(100)), Some(&only))
        .unwrap();
    assert_eq!(r.suppressed.len(), 1);
}

#[test]
fn imports_and_removals_show_live_without_blocking_matching() {
    let (_d, store) = new_store();
    create(&store, "live", false, &[]);
    let mut rng = Rng(99);
    let first: Vec<Vec<u8>> = (0..1000).map(|_| rng.bytes(16)).collect();
    load(&store, "live", "md5", &first);
    let m = Arc::new(Matcher::open(store.clone(), MatchConfig::default()).unwrap());
    let refresher = Matcher::start_refresher(&m, Duration::from_millis(50));

    let later: Vec<Vec<u8>> = (0..60_000).map(|_| rng.bytes(16)).collect();
    let probe = later[later.len() - 1].clone();
    let importing = Arc::new(AtomicBool::new(true));
    let during = Arc::new(AtomicU64::new(0));
    let reader = {
        let (m, importing, during) = (m.clone(), importing.clone(), during.clone());
        let (known, head, tail) = (first[0].clone(), later[0].clone(), probe.clone());
        std::thread::spawn(move || {
            while importing.load(Ordering::SeqCst) {
                let r = m
                    .match_query(&q("md5", vec![known.clone()], None), None)
                    .unwrap();
                assert_eq!(r.matches.len(), 1, "committed entries keep matching");
                // One query, one snapshot: the import's first and last records are visible
                // together or not at all.
                let mut both = q("md5", vec![head.clone()], None);
                both.extend(q("md5", vec![tail.clone()], None));
                let n = m.match_query(&both, None).unwrap().matches.len();
                assert!(n == 0 || n == 2, "a half-applied import was visible ({n})");
                during.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    load(&store, "live", "md5", &later);
    importing.store(false, Ordering::SeqCst);
    reader.join().unwrap();
    assert!(
        during.load(Ordering::SeqCst) > 0,
        "matching ran during the import"
    );

    let found = wait_until(|| {
        !m.match_query(&q("md5", vec![probe.clone()], None), None)
            .unwrap()
            .matches
            .is_empty()
    });
    assert!(found, "the import shows in matching within seconds");

    let md5 = HashType::new("md5").unwrap();
    let mut c = store.begin("live", "op", "list.remove").unwrap();
    c.tombstone(&md5, &probe, "test").unwrap();
    c.commit(None).unwrap();
    let gone = wait_until(|| {
        m.match_query(&q("md5", vec![probe.clone()], None), None)
            .unwrap()
            .matches
            .is_empty()
    });
    assert!(gone, "a removal stops matching within seconds");
    drop(refresher);
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn cold_start_rebuilds_the_index_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let h = vec![0x33u8; 32];
    {
        let store = Store::open(dir.path()).unwrap();
        create(&store, "l", false, &[]);
        load(&store, "l", "pdq", std::slice::from_ref(&h));
    }
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let m = Matcher::open(store, MatchConfig::default()).unwrap();
    assert_eq!(
        m.match_query(&q("pdq", vec![h], Some(100)), None)
            .unwrap()
            .matches
            .len(),
        1
    );
}

/// Whether each list's index came from a snapshot, by list name.
fn sources(m: &Matcher) -> Vec<(String, bool)> {
    m.snapshot()
        .lists
        .values()
        .map(|l| (l.name.clone(), l.from_snapshot))
        .collect()
}

#[test]
fn index_snapshots_are_used_only_when_current_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("index");
    let cfg = MatchConfig {
        snapshot_min_entries: Some(0),
        ..MatchConfig::default()
    };
    let mut rng = Rng(0x5eed);
    let pdq: Vec<Vec<u8>> = (0..3000).map(|_| rng.bytes(32)).collect();
    let md5: Vec<Vec<u8>> = (0..50).map(|_| rng.bytes(16)).collect();
    let more: Vec<Vec<u8>> = (0..100).map(|_| rng.bytes(32)).collect();
    let queries: Vec<Vec<Vec<u8>>> = (0..60)
        .map(|i| {
            let base = if i % 2 == 0 { &pdq[i] } else { &more[i] };
            let mut v: Vec<Vec<u8>> = (0..8).map(|_| rng.bytes(32)).collect();
            v[i % 8] = rng.flip(base, i % 40);
            v
        })
        .collect();
    // Every answer checked against the oracle over what the list holds at that moment.
    let check = |m: &Matcher, entries: &[Vec<u8>]| {
        for (i, v) in queries.iter().enumerate() {
            let want = oracle(&[("s", entries, 31)], v);
            assert_eq!(got(m, &q("pdq", v.clone(), Some(100))), want, "query {i}");
        }
        for h in &md5 {
            assert_eq!(got(m, &q("md5", vec![h.clone()], None)).len(), 1);
        }
    };
    let snapshot_files = || -> Vec<String> {
        std::fs::read_dir(&snaps)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    {
        let store = Arc::new(Store::open(dir.path()).unwrap());
        create(&store, "s", false, &[]);
        load(&store, "s", "pdq", &pdq);
        load(&store, "s", "md5", &md5);
        let m = Matcher::open(store, cfg.clone()).unwrap();
        assert_eq!(sources(&m), [("s".to_string(), false)]);
        // Written in the background after the build.
        assert!(
            wait_until(|| snapshot_files().iter().any(|f| f.ends_with(".idx"))),
            "a snapshot is written: {:?}",
            snapshot_files()
        );
    }
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let m = Matcher::open(store.clone(), cfg.clone()).unwrap();
    assert_eq!(sources(&m), [("s".to_string(), true)]);
    check(&m, &pdq);
    drop(m);

    // After a change the snapshot is still the base; the change log since is applied on top.
    load(&store, "s", "pdq", &more);
    let all: Vec<Vec<u8>> = pdq.iter().chain(&more).cloned().collect();
    let m = Matcher::open(store.clone(), cfg.clone()).unwrap();
    assert_eq!(sources(&m), [("s".to_string(), true)]);
    assert_eq!(
        m.snapshot().lists.values().next().unwrap().delta_sizes(),
        (100, 0)
    );
    check(&m, &all);
    m.write_snapshots().unwrap();
    assert_eq!(snapshot_files().len(), 1, "older versions removed");
    drop(m);

    // Any damaged byte is caught by the digest, and so is a truncated file: the list is rebuilt
    // from the store, and the rebuild writes a good snapshot again (in the background).
    let damages: [fn(&mut Vec<u8>); 4] = [
        |b| {
            let i = b.len() / 2;
            b[i] ^= 0x40
        },
        |b| b[20] ^= 1,
        |b| {
            let i = b.len() - 1;
            b[i] ^= 0x80
        },
        |b| b.truncate(b.len() / 3),
    ];
    for (n, damage) in damages.iter().enumerate() {
        let files = snapshot_files();
        assert_eq!(files.len(), 1, "{files:?}");
        let file = snaps.join(&files[0]);
        let mut bytes = std::fs::read(&file).unwrap();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let m = Matcher::open(store.clone(), cfg.clone()).unwrap();
        assert_eq!(sources(&m), [("s".to_string(), false)], "damage {n}");
        check(&m, &all);
        drop(m);
        assert!(
            wait_until(|| {
                let files = snapshot_files();
                files.len() == 1 && std::fs::read(snaps.join(&files[0])).is_ok_and(|b| b != bytes)
            }),
            "damage {n}: snapshot rewritten"
        );
        let m = Matcher::open(store.clone(), cfg.clone()).unwrap();
        assert_eq!(sources(&m), [("s".to_string(), true)], "damage {n}: healed");
        check(&m, &all);
    }
}

fn tombstone(store: &Store, list: &str, ty: &str, hashes: &[Vec<u8>]) {
    let ty = HashType::new(ty).unwrap();
    let mut c = store.begin(list, "tester", "remove").unwrap();
    for h in hashes {
        c.tombstone(&ty, h, "test").unwrap();
    }
    c.commit(None).unwrap();
}

#[test]
fn refresh_applies_small_changes_as_a_delta_and_rebuilds_after_large_ones() {
    let (_d, store) = new_store();
    create(&store, "d", false, &[]);
    let mut rng = Rng(0xde17a);
    let mut live: Vec<Vec<u8>> = (0..2000).map(|_| rng.bytes(32)).collect();
    load(&store, "d", "pdq", &live);
    let ms = matchers(&store);
    let gone: Vec<Vec<u8>> = live.drain(..10).collect();
    tombstone(&store, "d", "pdq", &gone);
    let added: Vec<Vec<u8>> = (0..50).map(|_| rng.bytes(32)).collect();
    load(&store, "d", "pdq", &added);
    live.extend(added.iter().cloned());
    // Re-adding a withdrawn entry makes it live again.
    load(&store, "d", "pdq", &gone[..1]);
    live.push(gone[0].clone());
    for (kind, m) in &ms {
        assert_eq!(m.refresh().unwrap(), ["d"]);
        let snap = m.snapshot();
        let l = snap.lists.values().next().unwrap();
        assert_eq!(l.base_version, 1, "{kind:?}: applied as a delta");
        assert_eq!(l.delta_sizes(), (50, 9), "{kind:?}");
        assert_eq!(l.entries, live.len() as u64);
        let all: Vec<Vec<u8>> = live.iter().chain(&gone).cloned().collect();
        for (i, base) in all.iter().enumerate() {
            let mut v: Vec<Vec<u8>> = (0..8).map(|_| rng.bytes(32)).collect();
            v[i % 8] = rng.flip(base, i % 36);
            let want = oracle(&[("d", &live, 31)], &v);
            assert_eq!(got(m, &q("pdq", v, Some(100))), want, "{kind:?}: query {i}");
        }
    }
    // Past the delta limit the list is rebuilt from the store.
    let many: Vec<Vec<u8>> = (0..70_000).map(|_| rng.bytes(16)).collect();
    load(&store, "d", "md5", &many);
    for (_, m) in &ms {
        m.refresh().unwrap();
        let snap = m.snapshot();
        let l = snap.lists.values().next().unwrap();
        assert_eq!(l.base_version, l.version);
        assert_eq!(l.delta_sizes(), (0, 0));
        assert_eq!(got(m, &q("md5", vec![many[69_999].clone()], None)).len(), 1);
        assert!(got(m, &q("pdq", vec![gone[1].clone()], Some(100))).is_empty());
    }
}
