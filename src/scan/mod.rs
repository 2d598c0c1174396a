//! Batch scanning (`baken scan`): enumerate inputs deterministically, hash them in bounded
//! chunks on the rayon pool, and hand each chunk's results, in enumeration order, to the caller.
//!
//! Inputs are directories (walked recursively in sorted order), `@list.txt` files naming one
//! input a line, `-` (such a list on stdin), `.tar` archives (read sequentially, members named
//! `archive.tar!member/path`) and plain files. Enumeration is deterministic, so a checkpoint
//! that says "the first N items are done" is enough to resume.
//!
//! Privacy: image bytes live only in the chunk being hashed and are dropped with it; nothing
//! here writes them anywhere.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use rayon::prelude::*;

use crate::error::DecodeError;
use crate::hashing::{self, HashOutput, Hasher};

/// How a scan is cut into chunks and where it starts.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Items already done by an earlier run: enumerated but neither read nor hashed.
    pub skip: u64,
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
    stop: &'a AtomicBool,
}

fn io_err(e: &std::io::Error) -> DecodeError {
    DecodeError::Io(e.kind().to_string())
}

fn is_tar(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

impl Walker<'_> {
    /// Counts the next item; true when it is to be skipped (done by an earlier run).
    fn next_skipped(&mut self) -> bool {
        self.seen += 1;
        self.seen <= self.skip
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// One command-line input. Returns false when the scan is to stop.
    fn input(&mut self, arg: &str, emit: &mut dyn FnMut(Entry) -> bool) -> bool {
        if arg == "-" {
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
        if self.next_skipped() {
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
            let mut children: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => return self.failed(id, io_err(&e), emit),
            };
            // Sorted so that every run enumerates the same order (the checkpoint relies on it).
            children.sort();
            for c in children {
                if !self.path(&c, emit) {
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
            return self.archive(p, &id, emit);
        }
        if self.next_skipped() {
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
            // Skipped and oversized members are not read: the tar reader seeks past their data
            // when the next entry is requested.
            if self.next_skipped() {
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

/// Scan `inputs`: enumerate them on a reader thread, hash each chunk on the current rayon pool,
/// and call `on_chunk` with the chunk's results in enumeration order. When `stop` is set the
/// reader stops and the chunks already read are still hashed and handed over, so the caller's
/// "first N done" stays exact. Returns the total number of items enumerated.
pub fn scan<F>(
    inputs: &[String],
    opts: &ScanOptions,
    hasher: &Hasher,
    stop: &AtomicBool,
    mut on_chunk: F,
) -> anyhow::Result<u64>
where
    F: FnMut(Vec<ScanItem>) -> anyhow::Result<()>,
{
    // One chunk queued while one is hashed: memory stays at about two chunks.
    let (tx, rx) = mpsc::sync_channel::<Vec<Entry>>(1);
    let limit = opts.max_input_bytes;
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut w = Walker {
                skip: opts.skip,
                seen: 0,
                max_input_bytes: limit,
                stop,
            };
            let mut chunk = Vec::new();
            let mut held = 0u64;
            let mut emit = |e: Entry| {
                held += e.held_bytes();
                chunk.push(e);
                if chunk.len() >= opts.chunk_items || held >= opts.chunk_bytes {
                    held = 0;
                    // The receiver is gone only when the caller failed; stop reading then.
                    return tx.send(std::mem::take(&mut chunk)).is_ok();
                }
                true
            };
            for i in inputs {
                if !w.input(i, &mut emit) {
                    break;
                }
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
        let seen = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the input reader panicked"))?;
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
            stop: &stop,
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
}
