//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod service;
pub mod video;

use std::path::PathBuf;

/// `../shared` next to the repository, when present. Under CI (`CI` set) its absence fails
/// the test: CI always lays it beside the clone, and a silent skip there would hide a broken
/// setup. Elsewhere (a fresh clone on its own) the test skips with a visible message.
pub fn shared_dir() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.join("vectors").is_dir() {
        return Some(p);
    }
    let why = "../shared is absent (needs the shared test data next to the clone)";
    if std::env::var_os("CI").is_some() {
        panic!("{why}: CI must have it");
    }
    // Written straight to stderr: the test harness captures `eprintln!`, and a skip must be
    // visible in the run's output.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
    None
}

/// Minimal CSV splitting for the shared manifests: handles quoted fields with commas.
pub fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Rows of a CSV file as header-keyed maps.
pub fn read_csv(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split_csv_line(lines.next().expect("header"));
    lines
        .map(|l| header.iter().cloned().zip(split_csv_line(l)).collect())
        .collect()
}

/// A deterministic synthetic photo-like image, integer arithmetic only (identical on every
/// platform): a bilinear blend of a random 9×9 colour grid, a few discs and a stripe band.
/// `channels` is 1 (grey) or 3 (RGB).
pub fn generated_image(width: u32, height: u32, channels: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    const G: i64 = 8;
    let grid: Vec<[i64; 3]> = (0..(G + 1) * (G + 1))
        .map(|_| {
            let v = next();
            [
                (v & 255) as i64,
                ((v >> 8) & 255) as i64,
                ((v >> 16) & 255) as i64,
            ]
        })
        .collect();
    let (w, h) = (i64::from(width), i64::from(height));
    let discs: Vec<(i64, i64, i64, i64)> = (0..3)
        .map(|_| {
            let v = next();
            let cx = (v & 0xFFFF) as i64 * w / 0x10000;
            let cy = ((v >> 16) & 0xFFFF) as i64 * h / 0x10000;
            let r = 2 + ((v >> 32) & 0xFF) as i64 * w.min(h) / 1024;
            (cx, cy, r, ((v >> 40) & 255) as i64)
        })
        .collect();
    let mut out = Vec::with_capacity((width * height) as usize * channels);
    for y in 0..h {
        let gy = y * G * 256 / (h - 1).max(1);
        let (iy, fy) = ((gy >> 8).min(G - 1), gy - ((gy >> 8).min(G - 1) << 8));
        for x in 0..w {
            let gx = x * G * 256 / (w - 1).max(1);
            let (ix, fx) = ((gx >> 8).min(G - 1), gx - ((gx >> 8).min(G - 1) << 8));
            let at = |dx: i64, dy: i64| grid[((iy + dy) * (G + 1) + ix + dx) as usize];
            let mut c = [0i64; 3];
            for (k, ck) in c.iter_mut().enumerate() {
                *ck = (at(0, 0)[k] * (256 - fx) * (256 - fy)
                    + at(1, 0)[k] * fx * (256 - fy)
                    + at(0, 1)[k] * (256 - fx) * fy
                    + at(1, 1)[k] * fx * fy)
                    >> 16;
            }
            for &(cx, cy, r, tone) in &discs {
                if (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r {
                    c = [tone, 255 - tone, (tone + 85) & 255];
                }
            }
            if (y * 16 / h.max(1)) == 11 && ((x / 7) & 1) == 0 {
                c = [c[0] / 3, c[1] / 3, c[2] / 3];
            }
            if channels == 1 {
                out.push(((c[0] * 77 + c[1] * 150 + c[2] * 29) >> 8) as u8);
            } else {
                out.extend(c.iter().map(|&v| v.clamp(0, 255) as u8));
            }
        }
    }
    out
}

/// The generated images with recorded reference PDQ values (tests/pdq_generated.rs):
/// (width, height, channels, seed).
pub const GENERATED_CASES: [(u32, u32, usize, u64); 8] = [
    (640, 480, 3, 1),
    (1000, 700, 3, 2),
    (333, 517, 3, 3),
    (100, 37, 3, 4),
    (2048, 1536, 3, 5),
    (800, 600, 1, 6),
    (129, 129, 1, 7),
    (5, 9, 3, 8),
];

pub fn generated_name(c: &(u32, u32, usize, u64)) -> String {
    format!("gen-{}x{}-c{}-s{}", c.0, c.1, c.2, c.3)
}

/// A PNG chunk with its CRC, for hand-made (and deliberately broken) PNG files.
pub fn png_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut typed = kind.to_vec();
    typed.extend_from_slice(body);
    let mut crc = 0xFFFF_FFFFu32;
    for &b in &typed {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut c = (body.len() as u32).to_be_bytes().to_vec();
    c.extend(typed);
    c.extend((!crc).to_be_bytes());
    c
}

/// A small deterministic generator for test and benchmark data.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `h` with `k` distinct bits flipped.
    pub fn flip(&mut self, h: &[u8], k: usize) -> Vec<u8> {
        let mut out = h.to_vec();
        let bits = h.len() * 8;
        let mut done = std::collections::BTreeSet::new();
        while done.len() < k.min(bits) {
            let b = (self.next() % bits as u64) as usize;
            if done.insert(b) {
                out[b / 8] ^= 1 << (b % 8);
            }
        }
        out
    }
}

/// Every file under `dir`, recursively (for scans of a data directory).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Whether `needle` (non-empty) occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `px` (RGB, 8 bits) encoded as PNG.
pub fn rgb_png(px: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(
        &mut out,
        px,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .unwrap();
    out.into_inner()
}

/// [`generated_image`] (RGB) as PNG.
pub fn generated_png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    rgb_png(&generated_image(width, height, 3, seed), width, height)
}

/// A `baken serve` child process, ended (killed) when the test ends, however it ends.
pub struct ServeChild(pub std::process::Child);

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `baken serve` (`cmd`: the binary with its arguments and environment; `serve --listen
/// 127.0.0.1:0` among them) and return it with the address it announces on stderr. Stderr is
/// drained afterwards (echoed with a `server:` prefix), so the server never blocks on a full
/// pipe.
pub fn spawn_serve(mut cmd: std::process::Command) -> (ServeChild, String) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = ServeChild(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.split("serving gRPC on ").nth(1) {
                let _ = tx.send(addr.split(',').next().unwrap_or("").trim().to_string());
            }
            eprintln!("server: {line}");
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the server did not announce its address");
    (server, addr)
}

/// The `baken` binary on data directory `data`, acting as `ci`, with nothing inherited that
/// would change where it reads its data or keys.
pub fn baken_at(data: &std::path::Path) -> std::process::Command {
    // `option_env!`: examples include this file too, and only tests have the binary's path.
    let Some(bin) = option_env!("CARGO_BIN_EXE_baken") else {
        panic!("baken_at is for integration tests, which cargo gives the binary's path")
    };
    let mut c = std::process::Command::new(bin);
    c.arg("--data")
        .arg(data)
        .env("BAKEN_ACTOR", "ci")
        .env_remove("BAKEN_DATA")
        .env_remove("BAKEN_SIGNING_KEY");
    c
}

/// The JSON lines of a command's output (blank lines skipped; a line that is not JSON fails
/// the test, naming it).
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Write RGB pixels as a PNG file; its bytes.
pub fn save_png(path: &std::path::Path, px: &[u8], w: u32, h: u32) -> Vec<u8> {
    let bytes = rgb_png(px, w, h);
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// A file's permission bits.
pub fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// With the CLI: create list `name` (`create_args`: more `list create` options) in `data` and
/// import the generic CSV file `csv` into it; both must succeed. The import's output.
pub fn cli_list_from_csv(
    data: &std::path::Path,
    name: &str,
    create_args: &[&str],
    csv: &std::path::Path,
) -> std::process::Output {
    let created = baken_at(data)
        .args(["list", "create", name])
        .args(create_args)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let imported = baken_at(data)
        .args(["list", "import", name, "--format", "csv"])
        .arg(csv)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&imported.stderr);
    assert!(imported.status.success(), "{stderr}");
    imported
}

/// Write a provider's report context file (`--context`) at `path`: a fictitious provider,
/// legal basis and recipient, plus the fields of `extra` (an object).
pub fn write_context(path: &std::path::Path, extra: serde_json::Value) {
    let mut ctx = serde_json::json!({
        "provider": {"name": "Example Photos", "contact_point": {"email": "abuse@example.invalid"}},
        "legal_basis": "Regulation (EU) 2021/1232, Art. 3",
        "recipient": {"organisation": "NCMEC"}
    });
    if let (Some(c), Some(e)) = (ctx.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    std::fs::write(path, ctx.to_string()).unwrap();
}

/// Assert a command's exit code, showing its stderr when it differs.
pub fn assert_exit(o: &std::process::Output, code: i32) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{stderr}");
}

/// A generic list CSV with the PDQ and MD5 of one `baken hash` output line.
pub fn pdq_md5_csv(hashed: &serde_json::Value, classification: &str, id: &str) -> String {
    format!(
        "hash_type,hash,classification,external_id\npdq,{},{classification},{id}\nmd5,{},{classification},{id}\n",
        hashed["pdq"]["hash"].as_str().unwrap(),
        hashed["md5"].as_str().unwrap()
    )
}

/// 32 random bytes (a random PDQ hash) from `rng`.
pub fn random_hash32(rng: &mut XorShift) -> [u8; 32] {
    let mut h = [0u8; 32];
    for c in h.chunks_mut(8) {
        c.copy_from_slice(&rng.next().to_le_bytes());
    }
    h
}

/// This process's resident memory, MB (for the examples' sizing figures).
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
