//! Crash consistency for real: a child `baken list import` is killed with SIGKILL mid-import;
//! the reopened store holds each list at its previous or its new version, never in between,
//! and every acknowledged change is still there.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baken::store::Store;

fn baken(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_baken"));
    // Small memtables: RocksDB flushes staged (unlogged) chunks mid-import, as it does on any
    // import larger than the default 64 MiB, so kills leave staged records on disk to roll back.
    c.arg("--data")
        .arg(data)
        .env("BAKEN_LOG", "error")
        .env("BAKEN_WRITE_BUFFER_MB", "1");
    c
}

/// A CSV of `n` distinct MD5 entries whose values start with `tag`.
fn big_csv(path: &Path, n: u32, tag: u8) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "hash_type,hash,classification,external_id").unwrap();
    for i in 0..n {
        writeln!(
            f,
            "md5,{tag:02x}{:030x},A1,e{i}",
            u128::from(i) * 0x9E37_79B9 + 1
        )
        .unwrap();
    }
    f.flush().unwrap();
}

fn live_count(store: &Store, list: &str) -> (u64, u64) {
    let meta = store.list(list).unwrap();
    let mut n = 0;
    store
        .scan_list_raw(&meta, |_, deleted, _| {
            n += u64::from(!deleted);
            Ok(())
        })
        .unwrap();
    (meta.version, n)
}

#[test]
fn killed_imports_leave_lists_at_the_old_or_new_version() {
    const N: u32 = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = dir.path().join("first.csv");
    big_csv(&first, 20_000, 0xaa);

    let ok = baken(&data)
        .args(["list", "create", "L"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    // An acknowledged import (the child exited 0 after the synced commit).
    let ok = baken(&data)
        .args(["list", "import", "L", "--format", "csv"])
        .arg(&first)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());

    let mut killed_mid_import = 0;
    let mut version = 1u64;
    let mut expected_live = 20_000u64;
    let mut rolled_back = 0u64;
    // The last round is not killed: it must land whole as the next version.
    for (i, delay_ms) in [100u64, 400, 900, 1600, u64::MAX].into_iter().enumerate() {
        // A fresh file each round, so a completed round adds N and a killed one stages records.
        let second = dir.path().join(format!("second-{i}.csv"));
        big_csv(&second, N, 0xb0 + i as u8);
        let mut child = baken(&data)
            .args(["list", "import", "L", "--format", "csv"])
            .arg(&second)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let finished = if delay_ms == u64::MAX {
            assert!(child.wait().unwrap().success());
            true
        } else {
            std::thread::sleep(Duration::from_millis(delay_ms));
            let finished = child.try_wait().unwrap().is_some();
            child.kill().ok(); // SIGKILL
            child.wait().unwrap();
            finished
        };
        if !finished {
            killed_mid_import += 1;
        }

        let store = Store::open(&data).unwrap();
        rolled_back += store.recovered().iter().map(|r| r.records).sum::<u64>();
        let (v, live) = live_count(&store, "L");
        eprintln!(
            "round {i}: kill after {delay_ms} ms (finished first: {finished}) -> version {v}, {live} live"
        );
        if v == version {
            assert_eq!(
                live, expected_live,
                "old version {v} must hold exactly its entries"
            );
        } else {
            assert_eq!(v, version + 1, "one version step at most");
            assert_eq!(
                live,
                expected_live + u64::from(N),
                "new version {v} must be complete"
            );
            version = v;
            expected_live = live;
        }
        // The acknowledged first import is intact whatever happened.
        assert!(live >= 20_000);
        drop(store);
    }
    assert!(
        killed_mid_import > 0,
        "no kill landed during an import; raise N"
    );
    assert!(
        rolled_back > 0,
        "some kill must have left staged records to roll back"
    );
    assert_eq!(version, 2, "the unkilled round committed");
}
