//! Benign, generated demo images: a newcomer can hash (and later match) something at once
//! without any photo collection.

use std::path::{Path, PathBuf};

use anyhow::Context;

use baken::decode::jpeg;

/// A deterministic synthetic scene: gradient sky, a few discs and stripes. `seed` varies it.
pub fn scene(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity((width * height * 3) as usize);
    let s = seed as f32;
    let discs: Vec<(f32, f32, f32, [u8; 3])> = (0..4)
        .map(|k| {
            let k = k as f32;
            let fx = ((s * 0.37 + k * 0.23).sin() * 0.5 + 0.5) * width as f32;
            let fy = ((s * 0.71 + k * 0.41).cos() * 0.5 + 0.5) * height as f32;
            let r = (0.08 + 0.05 * ((s + k).sin().abs())) * width.min(height) as f32;
            let c = [
                (40.0 + 200.0 * ((s + k) * 0.9).sin().abs()) as u8,
                (40.0 + 200.0 * ((s + k) * 1.3).cos().abs()) as u8,
                (40.0 + 200.0 * ((s * 2.0 + k) * 0.7).sin().abs()) as u8,
            ];
            (fx, fy, r, c)
        })
        .collect();
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32, y as f32);
            let mut c = [
                (255.0 * fy / height as f32) as u8,
                (128.0 + 100.0 * (fx / width as f32 * 6.0 + s).sin()) as u8,
                (255.0 - 200.0 * fx / width as f32) as u8,
            ];
            if (((fx + fy * 0.5 + s * 13.0) / (width as f32 / 9.0)) as u32).is_multiple_of(2)
                && fy > height as f32 * 0.7
            {
                c = [c[0] / 2, c[1] / 2, c[2] / 2];
            }
            for (dx, dy, r, dc) in &discs {
                if (fx - dx).powi(2) + (fy - dy).powi(2) < r * r {
                    c = *dc;
                }
            }
            px.extend_from_slice(&c);
        }
    }
    px
}

pub fn write_demo_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for seed in 0..4u32 {
        let (w, h) = (640 + seed * 64, 480 + seed * 32);
        let px = scene(w, h, seed);
        let png = dir.join(format!("demo-{seed}.png"));
        image::save_buffer_with_format(
            &png,
            &px,
            w,
            h,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .with_context(|| format!("writing {}", png.display()))?;
        out.push(png);
        let jpg = dir.join(format!("demo-{seed}.jpg"));
        let bytes = jpeg::encode(&px, w, h, 3, 90, false)?;
        std::fs::write(&jpg, bytes).with_context(|| format!("writing {}", jpg.display()))?;
        out.push(jpg);
    }
    Ok(out)
}

/// Put the PNGs among `files` into the list `demo` (created when absent): their PDQ and MD5.
pub fn build_demo_list(
    store: &baken::store::Store,
    files: &[PathBuf],
    actor: &str,
) -> anyhow::Result<baken::store::import::ImportReport> {
    use baken::hashing::{Algorithm, HashOptions, Hasher};
    use baken::store::import::{self, Format};

    if store.list("demo").is_err() {
        store.create_list(
            baken::store::NewList {
                name: "demo".into(),
                source: "generated demo images (benign)".into(),
                description: "made by `baken demo`".into(),
                ..baken::store::NewList::default()
            },
            actor,
        )?;
    }
    let hasher = Hasher::new(HashOptions {
        algorithms: vec![Algorithm::Pdq, Algorithm::Md5],
        ..HashOptions::default()
    });
    let mut csv = String::from("hash_type,hash,classification,external_id\n");
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "png"))
    {
        let out = hasher.hash_bytes(&std::fs::read(f)?)?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(p) = out.pdq {
            csv.push_str(&format!("pdq,{},demo,{name}\n", p.hash));
        }
        if let Some(m) = out.md5 {
            csv.push_str(&format!("md5,{m},demo,{name}\n"));
        }
    }
    let (report, _) = import::import(
        store,
        "demo",
        Format::Csv,
        csv.as_bytes(),
        "baken demo",
        actor,
    )?;
    Ok(report)
}

/// `baken demo`: generated images → a demo list in the data directory → match them.
/// The PNGs are the "known" items; their JPEG re-encodings match by PDQ, not by MD5.
pub fn run_demo(data: &Path, images: &Path, actor: &str) -> anyhow::Result<std::process::ExitCode> {
    let files = write_demo_images(images)?;
    let store = super::lists::open_store(data)?;
    let report = build_demo_list(&store, &files, actor)?;
    eprintln!(
        "list `demo` at version {} ({} added, {} unchanged) in {}",
        report.version_to,
        report.counts.added,
        report.counts.unchanged,
        data.display()
    );
    drop(store);
    let args = super::lists::MatchArgs::for_files(files);
    super::lists::run_match(args, data, actor)
}
