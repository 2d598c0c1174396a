//! `baken scan` as a user runs it: walking, lists, stdin, tar archives, `--all`, errors and exit
//! codes, progress off a terminal, resume after a kill, Ctrl-C, and no image data left behind.
//! Only generated, benign images.

mod common;

use common::{baken_at as baken, json_lines};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn save_png(path: &Path, seed: u64, side: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let px = common::generated_image(side, side, 3, seed);
    image::save_buffer_with_format(
        path,
        &px,
        side,
        side,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .unwrap();
}

fn ok(c: &mut Command) -> std::process::Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// A list `known` holding the MD5s of `files`.
fn make_list(data: &Path, dir: &Path, files: &[PathBuf]) {
    let out = ok(baken(data).args(["hash", "--algo", "md5"]).args(files));
    let mut csv = String::from("hash_type,hash,classification,external_id\n");
    for (i, v) in json_lines(&out.stdout).iter().enumerate() {
        csv += &format!("md5,{},A1,item-{i}\n", v["md5"].as_str().unwrap());
    }
    let p = dir.join("list.csv");
    std::fs::write(&p, csv).unwrap();
    common::cli_list_from_csv(data, "known", &["--source", "test"], &p);
}

fn split(lines: &[serde_json::Value]) -> (Vec<&serde_json::Value>, &serde_json::Value) {
    let (last, rest) = lines.split_last().expect("a summary line");
    assert!(last.get("summary").is_some(), "last line is the summary");
    (rest.iter().collect(), &last["summary"])
}

fn matched_items(lines: &[&serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .filter(|l| l["status"] == "match")
        .map(|l| l["item"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

struct Fixture {
    dir: tempfile::TempDir,
    data: PathBuf,
    root: PathBuf,
    known: Vec<PathBuf>,
    other: Vec<PathBuf>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = dir.path().join("imgs");
    let known = vec![root.join("a/x/known1.png"), root.join("b/known2.png")];
    let other = vec![root.join("a/other1.png"), root.join("b/deep/er/other2.png")];
    for (i, p) in known.iter().chain(&other).enumerate() {
        save_png(p, 100 + i as u64, 48);
    }
    make_list(&data, dir.path(), &known);
    Fixture {
        dir,
        data,
        root,
        known,
        other,
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn walks_directories_lists_stdin_and_tar_with_exit_codes() {
    let f = fixture();
    // Directory walk: nested files found, the known ones match.
    let o = baken(&f.data).arg("scan").arg(&f.root).output().unwrap();
    common::assert_exit(&o, 1);
    let lines = json_lines(&o.stdout);
    let (items, summary) = split(&lines);
    let mut want: Vec<String> = f.known.iter().map(|p| s(p)).collect();
    want.sort();
    assert_eq!(matched_items(&items), want);
    assert_eq!(items.len(), 2, "without --all only matches are printed");
    assert_eq!(summary["files"], 4);
    assert_eq!(summary["matched_files"], 2);
    assert_eq!(summary["matches_by_list"]["known"], 2);
    assert_eq!(summary["error_files"], 0);
    assert_eq!(items[0]["matches"][0]["list"], "known");

    // `@list.txt`.
    let list = f.dir.path().join("inputs.txt");
    std::fs::write(&list, format!("{}\n\n{}\n", s(&f.known[0]), s(&f.other[0]))).unwrap();
    let o = baken(&f.data)
        .arg("scan")
        .arg(format!("@{}", s(&list)))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o.stdout);
    let (items, summary) = split(&lines);
    assert_eq!(matched_items(&items), [s(&f.known[0])]);
    assert_eq!(summary["files"], 2);

    // `-`: the list on stdin; no match → exit 0.
    let mut child = baken(&f.data)
        .args(["scan", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", s(&f.other[1])).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let lines = json_lines(&o.stdout);
    let (items, summary) = split(&lines);
    assert!(items.is_empty());
    assert_eq!(summary["files"], 1);

    // A tar archive of the same tree matches the same members.
    let tar_path = f.dir.path().join("tree.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    b.append_dir_all("imgs", &f.root).unwrap();
    b.finish().unwrap();
    drop(b);
    let o = baken(&f.data).arg("scan").arg(&tar_path).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o.stdout);
    let (items, summary) = split(&lines);
    let mut want: Vec<String> = f
        .known
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(f.dir.path()).unwrap();
            format!("{}!{}", s(&tar_path), s(rel))
        })
        .collect();
    want.sort();
    assert_eq!(matched_items(&items), want);
    assert_eq!(summary["files"], 4);

    // `--all`: a line per file; non-matching ones carry no hashes.
    let o = baken(&f.data)
        .args(["scan", "--all"])
        .arg(&f.root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o.stdout);
    let (items, _) = split(&lines);
    assert_eq!(items.len(), 4);
    // Enumeration order: sorted, depth first.
    let order: Vec<&str> = items.iter().map(|l| l["item"].as_str().unwrap()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    for l in items.iter().filter(|l| l["status"] == "no_match") {
        let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["item", "status"], "{l}");
    }

    // A truncated file: exit 2, its kind in the summary, and with --all its own line.
    let bad = f.root.join("b/broken.png");
    let full = std::fs::read(&f.other[0]).unwrap();
    std::fs::write(&bad, &full[..full.len() / 2]).unwrap();
    let o = baken(&f.data)
        .args(["scan", "--all"])
        .arg(&f.root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let lines = json_lines(&o.stdout);
    let (items, summary) = split(&lines);
    let kind = summary["errors"].as_object().unwrap();
    assert_eq!(summary["error_files"], 1);
    assert_eq!(kind.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 1);
    let err = items.iter().find(|l| l["status"] == "error").unwrap();
    assert_eq!(err["item"], s(&bad));
    assert!(kind.contains_key(err["error_kind"].as_str().unwrap()));
    assert_eq!(summary["matched_files"], 2);

    // A missing input is an error item too.
    let o = baken(&f.data)
        .arg("scan")
        .arg(f.dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(split(&json_lines(&o.stdout)).1["errors"]["io"], 1);
}

#[test]
fn progress_lines_when_stderr_is_not_a_terminal() {
    let f = fixture();
    for i in 0..20 {
        save_png(&f.root.join(format!("more/{i:03}.png")), 500 + i, 32);
    }
    let o = baken(&f.data)
        .args(["scan", "--chunk-items", "3", "--progress-interval", "0"])
        .arg(&f.root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with("scan: ")).collect();
    assert!(progress.len() >= 2, "{err}");
    assert!(progress.last().unwrap().contains("24/24 files"), "{err}");
    assert!(progress[0].contains("files/s"), "{err}");
    // No terminal control sequences off a terminal.
    assert!(!err.contains('\x1b'), "{err}");
}

/// The periodic lines carry a total and an ETA when the inputs can be counted (a directory:
/// counted ahead by a metadata walk, exact at the latest once the reader has enumerated
/// everything, which is before the last chunk's line), and say the total is unknown for a tar
/// archive or stdin instead of inventing one. No timing is asserted: with one item a chunk, the
/// reader cannot be more than a few chunks ahead of the first line (the queue between them
/// holds one chunk), and the last line always follows the reader's end.
#[test]
fn progress_lines_show_a_total_and_eta_when_known_and_say_when_not() {
    let f = fixture();
    for i in 0..20 {
        save_png(&f.root.join(format!("more/{i:03}.png")), 500 + i, 16);
    }
    let progress = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| l.starts_with("scan: "))
            .map(str::to_owned)
            .collect()
    };
    let args = ["scan", "--chunk-items", "1", "--progress-interval", "0"];

    // A directory: a total and an ETA.
    let o = baken(&f.data).args(args).arg(&f.root).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lines = progress(&o);
    assert_eq!(lines.len(), 24, "{lines:?}");
    let last = lines.last().unwrap();
    assert!(last.contains("24/24 files (100%)"), "{last}");
    assert!(last.contains("ETA 0s"), "{last}");
    // Every line that has a total has the right one and an ETA.
    for l in &lines {
        if l.contains('/') && l.contains(" files (") {
            assert!(l.contains("/24 files") && l.contains("ETA"), "{l}");
        }
    }

    // A tar archive: unknown at first, said so; exact at the end.
    let tar_path = f.dir.path().join("tree.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    b.append_dir_all("imgs", &f.root).unwrap();
    b.finish().unwrap();
    drop(b);
    let o = baken(&f.data).args(args).arg(&tar_path).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lines = progress(&o);
    assert!(lines[0].contains("total unknown"), "{lines:?}");
    assert!(!lines[0].contains("ETA"), "{lines:?}");
    assert!(lines.last().unwrap().contains("24/24 files"), "{lines:?}");

    // Stdin: the same.
    let mut child = baken(&f.data)
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut w = child.stdin.take().unwrap();
        for p in common::files_under(&f.root) {
            writeln!(w, "{}", s(&p)).unwrap();
        }
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let lines = progress(&o);
    assert!(lines[0].contains("total unknown"), "{lines:?}");
    assert!(lines.last().unwrap().contains("24/24 files"), "{lines:?}");
}

/// `--shard K/N`: N runs over the same inputs (a directory with a tar archive in it and a
/// missing path) cover every item exactly once; each shard has its own checkpoint, so one
/// shard's interruption and resume neither disturbs nor is disturbed by another shard.
#[test]
fn shards_cover_every_item_exactly_once_with_a_checkpoint_each() {
    let (f, _) = many(120);
    let tar_path = f.root.join("z/members.tar");
    std::fs::create_dir_all(tar_path.parent().unwrap()).unwrap();
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        b.append_dir_all("m", f.root.join("many/01")).unwrap();
        b.finish().unwrap();
    }
    let missing = f.dir.path().join("missing.png");
    let run = |shard: Option<&str>| -> Vec<String> {
        let mut c = baken(&f.data);
        c.args(["scan", "--all"]).arg(&f.root).arg(&missing);
        if let Some(k) = shard {
            c.args(["--shard", k]);
        }
        let o = c.output().unwrap();
        // 2 for the shard that has the missing path, 1 or 0 for the others (matches or not).
        let want = if shard.is_none() { 2..=2 } else { 0..=2 };
        assert!(
            o.status.code().is_some_and(|c| want.contains(&c)),
            "{:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let lines = json_lines(&o.stdout);
        let (items, summary) = split(&lines);
        assert_eq!(summary["files"], items.len() as u64);
        assert_eq!(summary.get("shard").and_then(|v| v.as_str()), shard);
        items
            .iter()
            .map(|l| l["item"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut all = run(None);
    assert!(all.iter().any(|i| i.contains("members.tar!m/")), "{all:?}");
    assert!(all.contains(&s(&missing)));
    all.sort();
    let mut union = Vec::new();
    for k in 0..3 {
        let part = run(Some(&format!("{k}/3")));
        assert!(!part.is_empty() && part.len() < all.len());
        union.extend(part);
    }
    union.sort();
    // Union = all, and no duplicates (so the shards are disjoint).
    assert_eq!(union, all);
    let one = run(Some("0/1"));
    assert_eq!(one.len(), all.len());

    for bad in ["3/3", "1/0", "x"] {
        let o = baken(&f.data)
            .args(["scan", "--shard", bad])
            .arg(&f.root)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("K/N"), "{bad}");
    }

    // Shard 0 is killed after a checkpoint; shard 1 runs to the end meanwhile (its own
    // checkpoint, removed when it finishes); shard 0 resumes and does each of its items once.
    let out0 = f.dir.path().join("shard0.jsonl");
    let shard0 = |resume: bool| {
        let mut c = baken(&f.data);
        c.args([
            "scan",
            "--all",
            "--shard",
            "0/2",
            "--chunk-items",
            "5",
            "--chunk-delay-ms",
            "100",
            "--out",
        ])
        .arg(&out0)
        .arg(&f.root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    };
    let mut child = shard0(false).spawn().unwrap();
    let ck = wait_for_checkpoint(&f.data, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let out1 = f.dir.path().join("shard1.jsonl");
    let o = baken(&f.data)
        .args(["scan", "--all", "--resume", "--shard", "1/2", "--out"])
        .arg(&out1)
        .arg(&f.root)
        .output()
        .unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no checkpoint for these inputs"), "{err}");
    let cks: Vec<_> = std::fs::read_dir(f.data.join("scan-checkpoints"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(cks.len(), 1, "shard 0's checkpoint is still there: {cks:?}");
    let o = shard0(true).output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)), "{o:?}");
    let lines = json_lines(&std::fs::read(&out0).unwrap());
    let (items, summary) = split(&lines);
    assert!(summary["resumed_from"].as_u64() >= ck["completed"].as_u64());
    let mut got: Vec<String> = items
        .iter()
        .chain(split(&json_lines(&std::fs::read(&out1).unwrap())).0.iter())
        .map(|l| l["item"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = all.into_iter().filter(|i| *i != s(&missing)).collect();
    want.sort();
    assert_eq!(got, want, "two shards, one resumed: every item once");
}

fn wait_for_checkpoint(data: &Path, child: &mut std::process::Child) -> serde_json::Value {
    let dir = data.join("scan-checkpoints");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the scan ended before a checkpoint was seen"
        );
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "json")
                    && let Ok(t) = std::fs::read_to_string(e.path())
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
                    && v["completed"].as_u64().unwrap_or(0) >= 20
                {
                    return v;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn many(n: u64) -> (Fixture, usize) {
    let f = fixture();
    for i in 0..n {
        save_png(
            &f.root.join(format!("many/{:02}/{i:04}.png", i % 7)),
            1000 + i,
            16,
        );
    }
    (f, n as usize + 4)
}

fn check_exactly_once(out: &Path, total: usize) -> serde_json::Value {
    let lines = json_lines(&std::fs::read(out).unwrap());
    let (items, summary) = split(&lines);
    let mut seen = BTreeMap::new();
    for l in &items {
        *seen
            .entry(l["item"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), total, "every item appears");
    assert!(seen.values().all(|&c| c == 1), "and only once");
    assert_eq!(summary["files"], total as u64);
    assert_eq!(summary["matched_files"], 2);
    let counted = summary["matched_files"].as_u64().unwrap()
        + items.iter().filter(|l| l["status"] == "no_match").count() as u64
        + summary["error_files"].as_u64().unwrap();
    assert_eq!(counted, total as u64);
    summary.clone()
}

#[test]
fn resume_after_a_kill_does_every_item_exactly_once() {
    let (f, total) = many(300);
    let out = f.dir.path().join("results.jsonl");
    let scan = |resume: bool| {
        let mut c = baken(&f.data);
        c.args([
            "scan",
            "--all",
            "--chunk-items",
            "10",
            "--chunk-delay-ms",
            "40",
            "--out",
        ])
        .arg(&out)
        .arg(&f.root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    };
    let mut child = scan(false).spawn().unwrap();
    let ck = wait_for_checkpoint(&f.data, &mut child);
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!((ck["completed"].as_u64().unwrap() as usize) < total);

    let o = scan(true).output().unwrap();
    common::assert_exit(&o, 1);
    let summary = check_exactly_once(&out, total);
    assert!(summary["resumed_from"].as_u64().unwrap() >= 20);
    // A finished scan leaves no checkpoint.
    let left: Vec<_> = std::fs::read_dir(f.data.join("scan-checkpoints"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_leaves_a_checkpoint_and_a_valid_output() {
    let (f, total) = many(120);
    let out = f.dir.path().join("results.jsonl");
    let scan = |resume: bool| {
        let mut c = baken(&f.data);
        c.args([
            "scan",
            "--all",
            "--chunk-items",
            "10",
            "--chunk-delay-ms",
            "40",
            "--out",
        ])
        .arg(&out)
        .arg(&f.root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if resume {
            c.arg("--resume");
        }
        c
    };
    let mut child = scan(false).spawn().unwrap();
    wait_for_checkpoint(&f.data, &mut child);
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    common::assert_exit(&o, 130);
    // The interrupted output is valid JSONL ending in a summary marked interrupted.
    let lines = json_lines(&std::fs::read(&out).unwrap());
    let (_, summary) = split(&lines);
    assert_eq!(summary["interrupted"], true);

    let o = scan(true).output().unwrap();
    common::assert_exit(&o, 1);
    check_exactly_once(&out, total);
}

#[test]
fn a_scan_with_reports_leaves_no_image_data_behind() {
    let f = fixture();
    let context = f.dir.path().join("context.json");
    common::write_context(&context, serde_json::json!({}));
    let out = f.dir.path().join("out/results.jsonl");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let o = baken(&f.data)
        .args(["scan", "--all", "--report", "--context"])
        .arg(&context)
        .arg("--out")
        .arg(&out)
        .arg(&f.root)
        .output()
        .unwrap();
    common::assert_exit(&o, 1);
    let lines = json_lines(&std::fs::read(&out).unwrap());
    let (items, _) = split(&lines);
    let reported: Vec<_> = items.iter().filter(|l| l.get("report").is_some()).collect();
    assert_eq!(reported.len(), 2);
    // The report names the file as its content reference.
    let id = reported[0]["report"]["report_id"].as_str().unwrap();
    let shown = ok(baken(&f.data).args(["report", "show", id]));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("file:{}", reported[0]["item"].as_str().unwrap())),
        "{shown}"
    );

    // No 64-byte window of any input appears in the data directory or the output.
    let mut windows = std::collections::HashSet::new();
    for p in f.known.iter().chain(&f.other) {
        let b = std::fs::read(p).unwrap();
        // Past the PNG header and first chunk headers, which every PNG shares.
        for w in b[64..].chunks_exact(64) {
            windows.insert(w.to_vec());
        }
    }
    assert!(!windows.is_empty());
    let mut files = vec![out.clone()];
    let mut stack = vec![f.data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    for file in files {
        let b = std::fs::read(&file).unwrap();
        if b.len() < 64 {
            continue;
        }
        for i in 0..=b.len() - 64 {
            assert!(
                !windows.contains(&b[i..i + 64]),
                "image bytes in {}",
                file.display()
            );
        }
    }
}

#[test]
fn scan_through_a_running_server_sends_hashes_and_finds_the_same_matches() {
    let f = fixture();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    /// Ends the server this test started, also when an assertion fails.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(
        baken(&f.data)
            .args([
                "serve",
                "--no-demo",
                "--metrics-listen",
                "off",
                "--listen",
                &addr,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The client's own data directory holds only its checkpoint; the server has the store.
    let client_data = f.dir.path().join("client");
    let o = baken(&client_data)
        .args(["scan", "--all", "--server", &format!("http://{addr}")])
        .arg(&f.root)
        .output()
        .unwrap();
    drop(server);
    common::assert_exit(&o, 1);
    let lines = json_lines(&o.stdout);
    let (items, summary) = split(&lines);
    let mut want: Vec<String> = f.known.iter().map(|p| s(p)).collect();
    want.sort();
    assert_eq!(matched_items(&items), want);
    assert_eq!(summary["matches_by_list"]["known"], 2);
    let m = &items.iter().find(|l| l["status"] == "match").unwrap()["matches"][0];
    assert_eq!(m["list"], "known");
    assert_eq!(m["hash_type"], "md5");

    // The same over TLS with a private CA (`--server-ca`), as the Kubernetes Job runs it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let tls = f.dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for (name, text) in [
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
        ("ca.pem", ca.pem()),
    ] {
        std::fs::write(tls.join(name), text).unwrap();
    }
    let mut server = Server(
        baken(&f.data)
            .args([
                "serve",
                "--no-demo",
                "--metrics-listen",
                "off",
                "--listen",
                &addr,
            ])
            .env("BAKEN_TLS_CERT", tls.join("server.pem"))
            .env("BAKEN_TLS_KEY", tls.join("server.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
        assert!(std::time::Instant::now() < deadline, "no TLS server");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("https://localhost:{port}");
    let o = baken(&client_data)
        .args(["scan", "--server", &url])
        .arg(&f.root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "no CA: refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--server-ca"));
    let o = baken(&client_data)
        .args(["scan", "--server", &url, "--server-ca"])
        .arg(tls.join("ca.pem"))
        .arg(&f.root)
        .output()
        .unwrap();
    drop(server);
    common::assert_exit(&o, 1);
    let lines = json_lines(&o.stdout);
    assert_eq!(matched_items(&split(&lines).0), want);
}
