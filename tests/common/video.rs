//! Videos made in the test by the `ffmpeg` command (installed by scripts/setup): FFmpeg's
//! `lavfi` test sources, and raw RGB frames the test generated, in real containers.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Run `ffmpeg` with `args` writing `out_name` in a fresh directory; the file's bytes. A missing
/// `ffmpeg` fails the test: scripts/setup installs it.
pub fn ffmpeg(args: &[&str], out_name: &str) -> Vec<u8> {
    ffmpeg_with_input(args, out_name, None)
}

fn ffmpeg_with_input(args: &[&str], out_name: &str, stdin: Option<&[u8]>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(out_name);
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .arg(&out)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ffmpeg (installed by scripts/setup) did not start: {e}"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(data).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&out).unwrap()
}

/// A `testsrc2` video (moving, detailed: every frame has PDQ quality ≥ 50).
pub fn testsrc(size: &str, fps: u32, seconds: f64, codec_args: &[&str], out_name: &str) -> Vec<u8> {
    let src = format!("testsrc2=size={size}:rate={fps}:duration={seconds}");
    let mut args = vec!["-f", "lavfi", "-i", &src];
    args.extend_from_slice(codec_args);
    ffmpeg(&args, out_name)
}

/// Raw RGB24 frames (each `w*h*3` bytes) stored losslessly (`rawvideo` BGR24 in AVI: the
/// conversion back to RGB is a channel swap), so the decoder hands back exactly these pixels.
pub fn lossless_rgb(frames: &[Vec<u8>], w: u32, h: u32, fps: u32) -> Vec<u8> {
    let size = format!("{w}x{h}");
    let rate = fps.to_string();
    let data: Vec<u8> = frames.concat();
    ffmpeg_with_input(
        &[
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &size, "-r", &rate, "-i", "-", "-c:v",
            "rawvideo", "-pix_fmt", "bgr24",
        ],
        "raw.avi",
        Some(&data),
    )
}

/// Write `data` to `dir/name`; the path.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// A slideshow of generated images, one a second for `seconds` (distinct frames each second,
/// as a real video's scenes are), at 25 fps in H.264, after the ffmpeg filter `vf`.
pub fn slideshow(seed: u64, seconds: u32, vf: &str, codec: &[&str], out: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..seconds {
        write(dir.path(), &format!("{i:02}.png"), &slide(seed, i));
    }
    let pattern = dir.path().join("%02d.png");
    let pattern = pattern.to_string_lossy();
    let filter = if vf.is_empty() {
        "fps=25".to_string()
    } else {
        format!("fps=25,{vf}")
    };
    let mut args = vec!["-framerate", "1", "-i", &pattern, "-vf", &filter];
    args.extend_from_slice(codec);
    ffmpeg(&args, out)
}

/// The image `slideshow(seed, …)` shows from second `i`, as a PNG.
pub fn slide(seed: u64, i: u32) -> Vec<u8> {
    super::generated_png(320, 240, seed * 100 + u64::from(i))
}

/// The PDQ (hex) of that image, hashed as an image.
pub fn slide_pdq(seed: u64, i: u32) -> String {
    baken::hashing::Hasher::new(Default::default())
        .hash_bytes(&slide(seed, i))
        .unwrap()
        .pdq
        .unwrap()
        .hash
}
