//! Batch scanning (`baken scan`): enumerate inputs deterministically, hash them in bounded
//! chunks on the rayon pool, and hand each chunk's results, in enumeration order, to the caller.
//!
//! Inputs are directories (walked recursively in sorted order), `@list.txt` files naming one
//! input a line, `-` (such a list on stdin), `.tar` archives (read sequentially, members named
//! `archive.tar!member/path`) and plain files. Enumeration is deterministic, so a checkpoint
//! that says "the first N items are done" is enough to resume.
//!
//! Sharding ([`Shard`]): with `K/N`, only items whose id hashes to `K` modulo `N` are
//! enumerated at all, so N runs over the same inputs (the pods of an indexed Kubernetes Job)
//! cover every item exactly once, and each run's "first N done" counts its own items only.
//!
//! Totals ([`ScanTotal`]): while the reader enumerates, a second thread counts the items with a
//! metadata-only walk, so progress can show a total and an ETA. Archives and stdin cannot be
//! counted without reading them, so there the total stays unknown until the reader reaches the
//! end of the inputs (then it is exact).
//!
//! Privacy: image bytes live only in the chunk being hashed and are dropped with it; nothing
//! here writes them anywhere.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use sha2::Digest;

use rayon::prelude::*;

use crate::error::DecodeError;
use crate::hashing::{self, HashOutput, Hasher};

/// One of N disjoint parts of a scan's items (`K/N`, `0 <= K < N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Whether the item `id` belongs to this shard: the first 8 bytes of SHA-256(id), big
    /// endian, modulo N. A function of the id alone, identical on every machine and release,
    /// so the N runs of one job agree on the partition without talking to each other.
    pub fn contains(&self, id: &str) -> bool {
        let d = sha2::Sha256::digest(id.as_bytes());
        let mut h = [0u8; 8];
        h.copy_from_slice(&d[..8]);
        u64::from_be_bytes(h) % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard {s:?}: expected K/N with 0 <= K < N, e.g. 0/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The number of items a scan will enumerate, as far as known; shared between the counting
/// thread, the reader and whoever shows progress (a lock taken once per chunk or input).
#[derive(Debug)]
pub struct ScanTotal(std::sync::Mutex<Total>);

impl Default for ScanTotal {
    fn default() -> Self {
        ScanTotal(std::sync::Mutex::new(Total::Counting(0)))
    }
}

/// What [`ScanTotal::get`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Still counting (this many so far).
    Counting(u64),
    /// Exactly this many items (including those done by earlier runs of a resumed scan).
    Known(u64),
    /// Not countable without reading the inputs (stdin, tar archives) until the reader ends.
    Unknown,
}

impl ScanTotal {
    pub fn get(&self) -> Total {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(Total) -> Total) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t = f(*t);
    }

    /// The reader's exact total: final.
    fn set_known(&self, n: u64) {
        self.update(|_| Total::Known(n));
    }

    /// The counter's running count and verdict; never overrides the reader's exact total.
    fn set_counted(&self, t: Total) {
        self.update(|old| match old {
            Total::Counting(_) => t,
            other => other,
        });
    }
}

/// Counts the items `inputs` enumerate to (in `shard`) without reading any file: a walk of
/// directory entries and metadata. `None` when that cannot tell (stdin, an archive), or when
/// `stop` was set first.
pub fn count_items(inputs: &[String], shard: Option<Shard>, stop: &AtomicBool) -> Option<u64> {
    count_walk(inputs, shard, stop, None, None)
}

/// [`count_items`], also ended by `cancel`, storing the running count (after each input) in
/// `progress`.
fn count_walk(
    inputs: &[String],
    shard: Option<Shard>,
    stop: &AtomicBool,
    cancel: Option<&AtomicBool>,
    progress: Option<&ScanTotal>,
) -> Option<u64> {
    if inputs.iter().any(|i| i == "-") {
        return None;
    }
    let mut w = Walker {
        skip: u64::MAX,
        seen: 0,
        max_input_bytes: 0,
        shard,
        count_only: true,
        uncountable: false,
        stop,
        cancel,
    };
    // Every item is "skipped" (skip = MAX), so nothing is emitted: `seen` is the count.
    let mut emit = |_e: Entry| true;
    for i in inputs {
        if !w.input(i, &mut emit) || w.uncountable {
            return None;
        }
        if let Some(p) = progress {
            p.set_counted(Total::Counting(w.seen));
        }
    }
    (!w.stopped()).then_some(w.seen)
}

/// How a scan is cut into chunks and where it starts.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Items already done by an earlier run: enumerated but neither read nor hashed.
    pub skip: u64,
    /// Only this shard's items (all when `None`).
    pub shard: Option<Shard>,
    /// Most items in one chunk.
    pub chunk_items: usize,
    /// Most in-memory bytes (archive members) in one chunk.
    pub chunk_bytes: u64,
    /// Largest input, bytes (larger ones are a `too_large` error, never read whole).
    pub max_input_bytes: u64,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            skip: 0,
            shard: None,
            chunk_items: 64,
            chunk_bytes: 64 << 20,
            max_input_bytes: crate::decode::DecodeLimits::default().max_input_bytes,
        }
    }
}

/// One enumerated input, before hashing.
#[derive(Debug)]
enum Entry {
    /// A file on disk, read inside the hashing worker (at most one per worker in memory).
    File { id: String, path: PathBuf },
    /// An archive member, read by the enumerating thread (archives are sequential).
    Bytes {
        id: String,
        data: Result<Vec<u8>, DecodeError>,
    },
    /// Something that could not be enumerated or read (a missing path, an unreadable directory).
    Failed { id: String, error: DecodeError },
}

impl Entry {
    fn held_bytes(&self) -> u64 {
        match self {
            Entry::Bytes { data: Ok(d), .. } => d.len() as u64,
            _ => 0,
        }
    }
}

/// The result for one item, in enumeration order.
#[derive(Debug)]
pub struct ScanItem {
    pub id: String,
    /// Bytes read (0 when it could not be read).
    pub bytes: u64,
    pub result: Result<HashOutput, DecodeError>,
}

/// Enumerates the inputs in order, calling `emit` for every item at or past `skip`; `emit`
/// returns false to stop. Returns the number of items enumerated (including skipped ones).
struct Walker<'a> {
    skip: u64,
    seen: u64,
    max_input_bytes: u64,
    shard: Option<Shard>,
    /// Counting only: archives are not opened (that would read them whole); meeting one
    /// sets `uncountable` and stops the walk.
    count_only: bool,
    uncountable: bool,
    stop: &'a AtomicBool,
    /// A second reason to stop (the counter's: the scan it counts for has ended).
    cancel: Option<&'a AtomicBool>,
}

fn io_err(e: &std::io::Error) -> DecodeError {
    DecodeError::Io(e.kind().to_string())
}

fn is_tar(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

impl Walker<'_> {
    /// Whether the item `id` is to be emitted: false when it belongs to another shard (then it
    /// is not counted either) or was done by an earlier run.
    fn admit(&mut self, id: &str) -> bool {
        if self.shard.is_some_and(|s| !s.contains(id)) {
            return false;
        }
        self.seen += 1;
        self.seen > self.skip
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// One command-line input. Returns false when the scan is to stop.
    fn input(&mut self, arg: &str, emit: &mut dyn FnMut(Entry) -> bool) -> bool {
        if arg == "-" {
            if self.count_only {
                self.uncountable = true;
                return false;
            }
            let stdin = std::io::stdin();
            let lines: Vec<String> = stdin.lock().lines().map_while(Result::ok).collect();
            return self.list_lines(lines, emit);
        }
        if let Some(list) = arg.strip_prefix('@') {
            return match std::fs::read_to_string(list) {
                Ok(text) => self.list_lines(text.lines().map(str::to_owned).collect(), emit),
                Err(e) => self.failed(arg.to_owned(), io_err(&e), emit),
            };
        }
        self.path(Path::new(arg), emit)
    }

    fn list_lines(&mut self, lines: Vec<String>, emit: &mut dyn FnMut(Entry) -> bool) -> bool {
        for l in lines {
            let l = l.trim_end_matches('\r');
            // Blank lines are separators, not inputs; a list cannot name another list or stdin.
            if l.is_empty() {
                continue;
            }
            if !self.path(Path::new(l), emit) {
                return false;
            }
        }
        true
    }

    fn failed(
        &mut self,
        id: String,
        error: DecodeError,
        emit: &mut dyn FnMut(Entry) -> bool,
    ) -> bool {
        if self.stopped() {
            return false;
        }
        if !self.admit(&id) {
            return true;
        }
        emit(Entry::Failed { id, error })
    }

    fn path(&mut self, p: &Path, emit: &mut dyn FnMut(Entry) -> bool) -> bool {
        if self.stopped() {
            return false;
        }
        let id = p.to_string_lossy().into_owned();
        // Symlinks to directories are not followed (no cycles, no walking out of the tree);
        // symlinks to files are scanned as the file.
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    tracing::debug!("not following a symlinked directory");
                    return true;
                }
                Ok(m) => m,
                Err(e) => return self.failed(id, io_err(&e), emit),
            },
            Ok(m) => m,
            Err(e) => return self.failed(id, io_err(&e), emit),
        };
        if meta.is_dir() {
            // Sorted by name so that every run enumerates the same order (the checkpoint
            // relies on it). Links are not followed by the walk; each non-directory entry,
            // links included, is then judged by `path` like a named input.
            let walk = walkdir::WalkDir::new(p)
                .min_depth(1)
                .follow_links(false)
                .sort_by_file_name();
            for entry in walk {
                let more = match entry {
                    Ok(e) if e.file_type().is_dir() => true,
                    Ok(e) => self.path(e.path(), emit),
                    Err(e) => {
                        let id = e.path().unwrap_or(p).to_string_lossy().into_owned();
                        let err = e
                            .io_error()
                            .map_or_else(|| DecodeError::Io(e.to_string()), io_err);
                        self.failed(id, err, emit)
                    }
                };
                if !more {
                    return false;
                }
            }
            return true;
        }
        if !meta.is_file() {
            // Sockets, FIFOs, devices: reading them could block or never end.
            return self.failed(id, DecodeError::Io("not a regular file".into()), emit);
        }
        if is_tar(p) {
            if self.count_only {
                self.uncountable = true;
                return false;
            }
            return self.archive(p, &id, emit);
        }
        if !self.admit(&id) {
            return true;
        }
        emit(Entry::File {
            id,
            path: p.to_owned(),
        })
    }

    fn archive(&mut self, p: &Path, id: &str, emit: &mut dyn FnMut(Entry) -> bool) -> bool {
        let file = match std::fs::File::open(p) {
            Ok(f) => f,
            Err(e) => return self.failed(id.to_owned(), io_err(&e), emit),
        };
        let mut ar = tar::Archive::new(std::io::BufReader::new(file));
        let entries = match ar.entries() {
            Ok(e) => e,
            Err(e) => return self.failed(id.to_owned(), io_err(&e), emit),
        };
        for entry in entries {
            if self.stopped() {
                return false;
            }
            let mut entry = match entry {
                Ok(e) => e,
                // A broken header ends the archive: the rest cannot be located reliably.
                Err(e) => return self.failed(format!("{id}!"), io_err(&e), emit),
            };
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let member = match entry.path() {
                Ok(m) => m.to_string_lossy().into_owned(),
                Err(e) => return self.failed(format!("{id}!"), io_err(&e), emit),
            };
            let mid = format!("{id}!{member}");
            // Skipped, other shards' and oversized members are not read: the tar reader skips
            // their data when the next entry is requested.
            if !self.admit(&mid) {
                continue;
            }
            let size = entry.size();
            let data = if size > self.max_input_bytes {
                Err(DecodeError::TooLarge {
                    size,
                    limit: self.max_input_bytes,
                })
            } else {
                let mut buf = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut buf)
                    .map(|_| buf)
                    .map_err(|e| io_err(&e))
            };
            if !emit(Entry::Bytes { id: mid, data }) {
                return false;
            }
        }
        true
    }
}

/// The reader thread of [`scan`] panicked (a bug; the scan's results so far still stand).
#[derive(Debug, thiserror::Error)]
#[error("the input reader panicked")]
pub struct ReaderPanicked;

/// Scan `inputs`: enumerate them on a reader thread, hash each chunk on the current rayon pool,
/// and call `on_chunk` with the chunk's results in enumeration order. When `stop` is set the
/// reader stops and the chunks already read are still hashed and handed over, so the caller's
/// "first N done" stays exact. `total` is kept up to date for progress (a counting thread;
/// exact, even for archives and stdin, once the reader has enumerated everything, which is
/// before the last chunk is handed over). Returns the total number of items enumerated.
pub fn scan<F, E>(
    inputs: &[String],
    opts: &ScanOptions,
    hasher: &Hasher,
    stop: &AtomicBool,
    total: &ScanTotal,
    mut on_chunk: F,
) -> Result<u64, E>
where
    F: FnMut(Vec<ScanItem>) -> Result<(), E>,
    E: From<ReaderPanicked>,
{
    // One chunk queued while one is hashed: memory stays at about two chunks.
    let (tx, rx) = mpsc::sync_channel::<Vec<Entry>>(1);
    let limit = opts.max_input_bytes;
    // Ends the counter when the scan ends first (an interrupt, an error, a short scan).
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let done = &done;
        // Inputs that are obviously uncountable are said so at once, not when the counter
        // gets to them (archives inside directories are found by the counter).
        if inputs.iter().any(|i| i == "-" || is_tar(Path::new(i))) {
            total.set_counted(Total::Unknown);
        } else {
            s.spawn(move || {
                let counted = count_walk(inputs, opts.shard, stop, Some(done), Some(total));
                if !done.load(Ordering::Relaxed) {
                    total.set_counted(counted.map_or(Total::Unknown, Total::Known));
                }
            });
        }
        let reader = s.spawn(move || {
            let mut w = Walker {
                skip: opts.skip,
                seen: 0,
                max_input_bytes: limit,
                shard: opts.shard,
                count_only: false,
                uncountable: false,
                stop,
                cancel: None,
            };
            let mut chunk = Vec::new();
            let mut held = 0u64;
            // A full chunk is sent when the next entry arrives (or at the end), so the last
            // chunk always leaves after the total below is published.
            let mut emit = |e: Entry| {
                if chunk.len() >= opts.chunk_items || held >= opts.chunk_bytes {
                    held = 0;
                    // The receiver is gone only when the caller failed; stop reading then.
                    if tx.send(std::mem::take(&mut chunk)).is_err() {
                        return false;
                    }
                }
                held += e.held_bytes();
                chunk.push(e);
                true
            };
            let mut complete = true;
            for i in inputs {
                if !w.input(i, &mut emit) {
                    complete = false;
                    break;
                }
            }
            if complete && !w.stopped() {
                total.set_known(w.seen);
            }
            if !chunk.is_empty() {
                let _ = tx.send(chunk);
            }
            w.seen
        });
        let mut result = Ok(());
        for chunk in rx.iter() {
            let items: Vec<ScanItem> = chunk
                .into_par_iter()
                .map(|e| hash_entry(hasher, e, limit))
                .collect();
            if let Err(e) = on_chunk(items) {
                result = Err(e);
                break;
            }
        }
        // Dropping the receiver unblocks a reader waiting to send.
        drop(rx);
        let joined = reader.join();
        done.store(true, Ordering::Relaxed);
        let seen = joined.map_err(|_| ReaderPanicked)?;
        result.map(|()| seen)
    })
}

fn hash_entry(hasher: &Hasher, e: Entry, limit: u64) -> ScanItem {
    match e {
        Entry::File { id, path } => match hashing::read_limited(&path, limit) {
            Ok(bytes) => ScanItem {
                id,
                bytes: bytes.len() as u64,
                result: hasher.hash_bytes(&bytes),
            },
            Err(error) => ScanItem {
                id,
                bytes: 0,
                result: Err(error),
            },
        },
        Entry::Bytes { id, data } => match data {
            Ok(bytes) => ScanItem {
                id,
                bytes: bytes.len() as u64,
                result: hasher.hash_bytes(&bytes),
            },
            Err(error) => ScanItem {
                id,
                bytes: 0,
                result: Err(error),
            },
        },
        Entry::Failed { id, error } => ScanItem {
            id,
            bytes: 0,
            result: Err(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(inputs: &[String], skip: u64) -> (Vec<String>, u64) {
        let stop = AtomicBool::new(false);
        let mut w = Walker {
            skip,
            seen: 0,
            max_input_bytes: 1 << 20,
            shard: None,
            count_only: false,
            uncountable: false,
            stop: &stop,
            cancel: None,
        };
        let mut out = Vec::new();
        for i in inputs {
            w.input(i, &mut |e| {
                out.push(match e {
                    Entry::File { id, .. } | Entry::Bytes { id, .. } | Entry::Failed { id, .. } => {
                        id
                    }
                });
                true
            });
        }
        (out, w.seen)
    }

    #[test]
    fn scan_walk_is_sorted_recursive_and_skips_a_prefix() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        for f in ["b/c/z.png", "b/a.png", "a.png", "b/c/a.png"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let mut tb = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_cksum();
        tb.append_data(&mut h, "in/m1.png", &b"ab"[..]).unwrap();
        tb.append_data(&mut h, "in/m2.png", &b"cd"[..]).unwrap();
        std::fs::write(root.join("b/t.tar"), tb.into_inner().unwrap()).unwrap();
        let r = root.to_string_lossy().into_owned();
        let (all, n) = ids(std::slice::from_ref(&r), 0);
        let rel: Vec<String> = all
            .iter()
            .map(|s| s.strip_prefix(&r).unwrap().to_owned())
            .collect();
        assert_eq!(
            rel,
            [
                "/a.png",
                "/b/a.png",
                "/b/c/a.png",
                "/b/c/z.png",
                "/b/t.tar!in/m1.png",
                "/b/t.tar!in/m2.png"
            ]
        );
        assert_eq!(n, 6);
        let (rest, n) = ids(&[r], 4);
        assert_eq!(rest, all[4..]);
        assert_eq!(n, 6);
    }

    #[test]
    fn scan_missing_input_is_an_io_item() {
        let (ids, n) = ids(&["/nonexistent/baken-scan".into()], 0);
        assert_eq!(ids, ["/nonexistent/baken-scan"]);
        assert_eq!(n, 1);
    }

    fn walk(inputs: &[String], shard: Option<Shard>) -> Vec<String> {
        let stop = AtomicBool::new(false);
        let mut w = Walker {
            skip: 0,
            seen: 0,
            max_input_bytes: 1 << 20,
            shard,
            count_only: false,
            uncountable: false,
            stop: &stop,
            cancel: None,
        };
        let mut out = Vec::new();
        for i in inputs {
            w.input(i, &mut |e| {
                out.push(match e {
                    Entry::File { id, .. } | Entry::Bytes { id, .. } | Entry::Failed { id, .. } => {
                        id
                    }
                });
                true
            });
        }
        assert_eq!(w.seen, out.len() as u64);
        out
    }

    #[test]
    fn scan_shard_parses_k_of_n_and_refuses_the_rest() {
        assert_eq!("2/5".parse::<Shard>(), Ok(Shard { index: 2, count: 5 }));
        assert_eq!(
            "0/1".parse::<Shard>().map(|s| s.to_string()),
            Ok("0/1".into())
        );
        for bad in ["5/5", "1/0", "0", "a/2", "-1/2", "1/2/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // The partition is a function of the id alone: pinned, so a release that changed it
        // (and split a running job differently) fails here.
        let s = |k| Shard { index: k, count: 4 };
        let owner = |id: &str| (0..4).find(|&k| s(k).contains(id));
        assert_eq!(owner("photos/a.jpg"), owner("photos/a.jpg"));
        let d = sha2::Sha256::digest(b"photos/a.jpg");
        let want = u64::from_be_bytes(d[..8].try_into().unwrap()) % 4;
        assert_eq!(owner("photos/a.jpg"), Some(want));
    }

    #[test]
    fn scan_shards_partition_the_items_and_counting_agrees_with_the_walk() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..60 {
            let p = d.path().join(format!("d{}/f{i:03}.png", i % 5));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let inputs = vec![
            d.path().to_string_lossy().into_owned(),
            "/nonexistent/baken-shard".to_owned(),
        ];
        let all = walk(&inputs, None);
        assert_eq!(all.len(), 61);
        let stop = AtomicBool::new(false);
        assert_eq!(count_items(&inputs, None, &stop), Some(61));
        let mut union = Vec::new();
        for k in 0..3 {
            let shard = Some(Shard { index: k, count: 3 });
            let part = walk(&inputs, shard);
            assert!(
                !part.is_empty() && part.len() < all.len(),
                "{k}: {}",
                part.len()
            );
            assert_eq!(count_items(&inputs, shard, &stop), Some(part.len() as u64));
            union.extend(part);
        }
        // Every item in exactly one shard.
        union.sort();
        let mut want = all.clone();
        want.sort();
        assert_eq!(union, want);

        // An archive cannot be counted without reading it; stdin neither.
        let mut tb = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        tb.append_data(&mut h, "m.png", &b"x"[..]).unwrap();
        std::fs::write(d.path().join("d1/t.tar"), tb.into_inner().unwrap()).unwrap();
        assert_eq!(count_items(&inputs, None, &stop), None);
        assert_eq!(count_items(&["-".to_owned()], None, &stop), None);
        // A stopped count says nothing.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(count_items(&inputs[..1], None, &stop), None);
    }
}
