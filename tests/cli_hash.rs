//! `baken hash` as a user runs it: real binary, real files, JSON lines, exit codes.

mod common;

use common::json_lines as lines;

use std::path::Path;
use std::process::Command;

use baken::decode::jpeg;
use baken::hashing::pdq::{PdqMode, PixelView, pdq_hash};

fn baken() -> Command {
    Command::new(env!("CARGO_BIN_EXE_baken"))
}

fn write_png(path: &Path, w: u32, h: u32, seed: u64) -> Vec<u8> {
    let px = common::generated_image(w, h, 3, seed);
    image::save_buffer_with_format(
        path,
        &px,
        w,
        h,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .unwrap();
    px
}

/// A JPEG with an EXIF APP1 segment carrying `orientation`, inserted after SOI.
fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
    let px = common::generated_image(w, h, 3, 5);
    let j = jpeg::encode(&px, w, h, 3, 90, false).unwrap();
    // TIFF header (little endian), one IFD with one entry: 0x0112 SHORT 1 = orientation.
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = j[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend_from_slice(&j[2..]);
    out
}

#[test]
fn hashes_files_in_order_with_per_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.png");
    let px = write_png(&a, 300, 200, 1);
    // Content sniffing: a JPEG named .png still decodes as JPEG.
    let b = dir.path().join("b.png");
    std::fs::write(&b, jpeg_with_orientation(120, 90, 6)).unwrap();
    let bad = dir.path().join("c.jpg");
    std::fs::write(&bad, b"definitely not a jpeg").unwrap();
    let missing = dir.path().join("missing.webp");

    let out = baken()
        .args(["hash", "--algo", "all"])
        .args([&a, &b, &bad, &missing])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "some inputs failed");
    let v = lines(&out.stdout);
    assert_eq!(v.len(), 4);
    assert_eq!(v[0]["file"], a.to_string_lossy().as_ref());
    assert_eq!(v[3]["file"], missing.to_string_lossy().as_ref());

    let want = pdq_hash(
        PixelView {
            width: 300,
            height: 200,
            channels: 3,
            data: &px,
        },
        PdqMode::Full,
    );
    assert_eq!(v[0]["pdq"]["hash"], want.hash.to_hex());
    assert_eq!(v[0]["pdq"]["quality"], want.quality);
    assert_eq!(v[0]["pdq"]["dihedral"].as_array().unwrap().len(), 8);
    assert_eq!(v[0]["pdq"]["mode"], "full");
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(v[0]["sha256"], baken::hashing::exact::sha256_hex(&bytes));
    for k in ["phash", "dhash", "ahash", "blockhash"] {
        assert_eq!(v[0][k].as_str().unwrap().len(), 16, "{k} is 64 bits");
    }
    assert_eq!(v[0]["image"]["format"], "png");

    assert_eq!(v[1]["image"]["format"], "jpeg");
    assert_eq!(
        v[1]["image"]["exif_orientation"], 6,
        "reported, not applied"
    );
    assert_eq!(v[1]["image"]["width"], 120);

    assert_eq!(v[2]["error"]["kind"], "unsupported_format");
    assert_eq!(v[3]["error"]["kind"], "io");
    assert!(v[3].get("pdq").is_none());
}

#[test]
fn exit_codes_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("big.png");
    let px = write_png(&a, 1200, 700, 2);
    let ok = baken()
        .args(["hash", "--algo", "pdq", "--pdq-mode", "ref512"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let v = lines(&ok.stdout);
    let want = pdq_hash(
        PixelView {
            width: 1200,
            height: 700,
            channels: 3,
            data: &px,
        },
        PdqMode::Ref512,
    );
    assert_eq!(v[0]["pdq"]["hash"], want.hash.to_hex());
    assert_eq!(v[0]["pdq"]["mode"], "ref512");
    assert!(v[0].get("md5").is_none(), "only what was asked");

    for bad_args in [
        vec!["hash", "--algo", "nope", "x"],
        vec!["hash", "--pdq-mode", "half", "x"],
        vec!["hash"],
        vec!["frobnicate"],
    ] {
        let o = baken().args(&bad_args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad_args:?}");
    }
}

#[test]
fn limits_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.png");
    write_png(&a, 400, 300, 3);
    let o = baken()
        .args(["hash", "--max-pixels", "10000"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v = lines(&o.stdout);
    assert_eq!(v[0]["error"]["kind"], "dimensions_too_large");
    assert!(
        v[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("400x300")
    );
    let o = baken()
        .args(["hash", "--max-bytes", "100"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(lines(&o.stdout)[0]["error"]["kind"], "too_large");
}

#[test]
fn hashing_writes_nothing_to_disk() {
    let work = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let a = inputs.path().join("a.png");
    write_png(&a, 200, 200, 4);
    let o = baken()
        .current_dir(work.path())
        .env("HOME", work.path())
        .env("TMPDIR", work.path())
        .args(["hash", "--algo", "all"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(inputs.path()).unwrap().count(), 1);
}

#[test]
fn fast_mode_is_close_to_full_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jpg");
    let px = common::generated_image(2000, 1500, 3, 9);
    std::fs::write(&a, jpeg::encode(&px, 2000, 1500, 3, 92, false).unwrap()).unwrap();
    let run = |fast: bool| {
        let mut c = baken();
        c.args(["hash", "--algo", "pdq"]);
        if fast {
            c.arg("--fast");
        }
        lines(&c.arg(&a).output().unwrap().stdout).remove(0)
    };
    let (full, fast) = (run(false), run(true));
    assert_eq!(fast["pdq"]["fast"], true);
    assert!(full["pdq"].get("fast").is_none());
    let h = |v: &serde_json::Value| {
        baken::hashing::Hash256::from_hex(v["pdq"]["hash"].as_str().unwrap()).unwrap()
    };
    let d = h(&full).hamming(&h(&fast));
    assert!(d <= 31, "fast mode drifted {d} bits");
    assert_eq!(fast["image"]["width"], 2000, "original size reported");
    assert_eq!(fast["image"]["decoded_size"][0], 500);
}
