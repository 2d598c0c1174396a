//! Writes the images of tests/pdq_generated.rs as PNG files so their reference values can be
//! re-recorded with `python3 bench/record_generated.py DIR`.
//!
//! cargo run --example dump_generated -- DIR

#[path = "../tests/common/mod.rs"]
mod common;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/gen".into());
    std::fs::create_dir_all(&dir)?;
    for c in &common::GENERATED_CASES {
        let px = common::generated_image(c.0, c.1, c.2, c.3);
        let ct = if c.2 == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        let path = std::path::Path::new(&dir).join(format!("{}.png", common::generated_name(c)));
        image::save_buffer_with_format(&path, &px, c.0, c.1, ct, image::ImageFormat::Png)?;
        println!("{}", path.display());
    }
    Ok(())
}
