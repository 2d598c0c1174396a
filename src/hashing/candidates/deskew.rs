//! Deskew: a picture rotated by a few degrees inside its canvas, rotated back. A rotation of
//! ±2–4° leaves PDQ 60–100 bits away from the original, yet the rotation is easy to see: it
//! leaves a fill-coloured triangle in each corner of the canvas, whose legs give the angle. We
//! estimate the angle from those triangles only (no search over angles: each tried angle would
//! be one more hash, one more chance of a false match) and rotate the picture back.
//!
//! The corners the rotation pushed out of the canvas are lost; rotated back, they would be
//! fill-coloured triangles of their own and move PDQ by 15–25 bits. We fill them with the
//! nearest edge pixel of the rotated picture instead (sampling clamps to the canvas), which
//! keeps the low frequencies PDQ sees close to the original's (median 8 bits at ±4° on the
//! shared corpus, against 22 with the triangles left black).

use super::Rect;
use super::border::close;
use crate::hashing::pdq::{PixelView, luma_image};

/// How the fill triangles are read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeskewParams {
    /// A pixel is fill when every channel is within this of the corner pixel.
    pub tolerance: u8,
    /// Rotations smaller than this (degrees) are left alone: PDQ tolerates them.
    pub min_degrees: f32,
    /// Rotations larger than this are not small rotations; the 8 dihedrals cover 90° steps.
    pub max_degrees: f32,
    /// Corners whose triangles must agree on the angle (of 4).
    pub min_corners: usize,
    /// How far (degrees) a corner's angle may be from the others'.
    pub agree_degrees: f32,
}

impl Default for DeskewParams {
    fn default() -> Self {
        DeskewParams {
            tolerance: 24,
            min_degrees: 0.5,
            max_degrees: 12.0,
            min_corners: 3,
            agree_degrees: 0.5,
        }
    }
}

/// A rotation found in the corners: the picture was rotated `degrees` counter-clockwise as
/// seen (Pillow's `rotate(degrees)`); `expanded` when the canvas was enlarged to hold the
/// whole rotated picture (its corners touch the canvas edges) rather than kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skew {
    pub degrees: f32,
    pub expanded: bool,
    /// The rotated picture's canvas inside the image: whole rows and columns of fill around
    /// it (an enlarged canvas rounded up, a border added after rotating) are left out.
    pub canvas: Rect,
}

/// The rotation of the picture inside `view`, when at least `min_corners` corners hold a fill
/// triangle of one colour and agree on the angle.
pub fn skew_angle(view: PixelView<'_>, p: &DeskewParams) -> Option<Skew> {
    let c = view.channels;
    if view.width < 16
        || view.height < 16
        || !(c == 1 || c == 3)
        || view.data.len() < view.width * view.height * c
    {
        return None;
    }
    let canvas = trim_fill(view, p.tolerance)?;
    let (x0, y0) = (canvas.x0, canvas.y0);
    let (w, h) = (canvas.width(), canvas.height());
    if w < 16 || h < 16 {
        return None;
    }
    // Corner k sees the canvas mirrored so that its corner is (0, 0): (i, j) → pixel.
    let px = |k: usize, i: usize, j: usize| -> &[u8] {
        let x = x0 + if k & 1 == 0 { i } else { w - 1 - i };
        let y = y0 + if k & 2 == 0 { j } else { h - 1 - j };
        let at = (y * view.width + x) * c;
        &view.data[at..at + c]
    };
    let lo = p.min_degrees.to_radians().tan();
    let hi = p.max_degrees.to_radians().tan();
    let mut found: Vec<(f32, &[u8])> = Vec::new();
    let mut runs = [(0usize, 0usize); 4];
    for (k, run) in runs.iter_mut().enumerate() {
        let fill = px(k, 0, 0);
        let is_fill = |i: usize, j: usize| close(px(k, i, j), fill, p.tolerance);
        let along_x = |j: usize, cap: usize| (0..cap.min(w)).take_while(|&i| is_fill(i, j)).count();
        let along_y = |i: usize, cap: usize| (0..cap.min(h)).take_while(|&j| is_fill(i, j)).count();
        let (hx, vy) = (along_x(0, w), along_y(0, h));
        *run = (hx, vy);
        let (long, short) = (hx.max(vy), hx.min(vy));
        if long < 8 || short < 2 || long >= (if hx > vy { w } else { h }) {
            continue;
        }
        // The hypotenuse is the picture's edge: fit the fill's depth along the long leg,
        // which averages out the anti-aliased pixels that make the legs themselves a pixel or
        // two off.
        let n = (long * 4 / 5).max(4);
        let step = (n / 64).max(1);
        let cap = 2 * short + 4;
        let samples: Vec<(f64, f64)> = (0..n)
            .step_by(step)
            .map(|t| {
                let depth = if hx > vy {
                    along_y(t, cap)
                } else {
                    along_x(t, cap)
                };
                (t as f64, depth as f64)
            })
            .collect();
        let Some(slope) = fit_slope(&samples) else {
            continue;
        };
        let k_tan = -slope as f32;
        if !(lo..=hi).contains(&k_tan) {
            continue;
        }
        // Counter-clockwise puts the long leg along the top at the top-left corner and at the
        // bottom-right; mirrored corners see it the other way.
        let ccw = (hx > vy) == (k == 0 || k == 3);
        let deg = k_tan.atan().to_degrees();
        found.push((if ccw { deg } else { -deg }, fill));
    }
    let first = found.first()?.1;
    let mut angles: Vec<f32> = found
        .iter()
        .filter(|(_, f)| close(f, first, p.tolerance))
        .map(|(a, _)| *a)
        .collect();
    angles.sort_by(f32::total_cmp);
    let median = *angles.get(angles.len() / 2)?;
    let agree: Vec<f32> = angles
        .into_iter()
        .filter(|a| (a - median).abs() <= p.agree_degrees)
        .collect();
    if agree.len() < p.min_corners.max(1) {
        return None;
    }
    let degrees = agree.iter().sum::<f32>() / agree.len() as f32;
    // The picture's corners touch the canvas edges when the triangles of neighbouring corners
    // (nearly) meet along the top and along the left: the picture holds a sliver of each.
    let slack = |d: usize| (d / 10).max(3);
    let expanded = runs[0].0 + runs[1].0 + slack(w) >= w && runs[0].1 + runs[2].1 + slack(h) >= h;
    Some(Skew {
        degrees,
        expanded,
        canvas,
    })
}

/// `view` without the whole rows and columns of the top-left pixel's colour around it; `None`
/// when nothing else is left.
fn trim_fill(view: PixelView<'_>, tolerance: u8) -> Option<Rect> {
    let (w, h, c) = (view.width, view.height, view.channels);
    let px = |x: usize, y: usize| -> &[u8] {
        let at = (y * w + x) * c;
        &view.data[at..at + c]
    };
    let fill = px(0, 0);
    let row = |y: usize, x0: usize, x1: usize| (x0..x1).all(|x| close(px(x, y), fill, tolerance));
    let col = |x: usize, y0: usize, y1: usize| (y0..y1).all(|y| close(px(x, y), fill, tolerance));
    let y0 = (0..h).find(|&y| !row(y, 0, w))?;
    let y1 = (y0..h).rev().find(|&y| !row(y, 0, w))? + 1;
    let x0 = (0..w).find(|&x| !col(x, y0, y1))?;
    let x1 = (x0..w).rev().find(|&x| !col(x, y0, y1))? + 1;
    Some(Rect { x0, y0, x1, y1 })
}

/// The least-squares slope of `(x, y)` points, when they are not all at one x.
fn fit_slope(pts: &[(f64, f64)]) -> Option<f64> {
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The luma of `view` rotated back by `skew`, and the region of the canvas it covers: the whole
/// canvas, or for an enlarged canvas the original picture's size at its centre.
pub fn deskewed_luma(view: PixelView<'_>, skew: &Skew) -> (Vec<f32>, Rect) {
    let cv = skew.canvas;
    let pixels = super::crop(view, cv);
    let (w, h) = (cv.width(), cv.height());
    let luma = luma_image(PixelView {
        width: w,
        height: h,
        channels: view.channels,
        data: &pixels,
    });
    let t = f64::from(skew.degrees).to_radians();
    let (cos, sin) = (t.cos(), t.sin());
    let (wf, hf) = (w as f64, h as f64);
    let (ow, oh) = if skew.expanded {
        // W = w·cos + h·sin and H = w·sin + h·cos, solved for the picture's w × h.
        let (ac, as_) = (cos.abs(), sin.abs());
        let det = ac * ac - as_ * as_;
        let ow = ((wf * ac - hf * as_) / det).round();
        let oh = ((hf * ac - wf * as_) / det).round();
        ((ow.max(8.0) as usize).min(w), (oh.max(8.0) as usize).min(h))
    } else {
        (w, h)
    };
    let (ox, oy) = ((w - ow) / 2, (h - oh) / 2);
    let (cx, cy) = ((wf - 1.0) / 2.0, (hf - 1.0) / 2.0);
    let (xmax, ymax) = (wf - 1.0, hf - 1.0);
    let mut out = Vec::with_capacity(ow * oh);
    for y in 0..oh {
        let dy = (y + oy) as f64 - cy;
        for x in 0..ow {
            let dx = (x + ox) as f64 - cx;
            // Where this pixel of the upright picture is in the rotated one; outside the
            // canvas, the nearest edge pixel.
            let sx = (dx * cos + dy * sin + cx).clamp(0.0, xmax);
            let sy = (-dx * sin + dy * cos + cy).clamp(0.0, ymax);
            let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = ((sx - x0 as f64) as f32, (sy - y0 as f64) as f32);
            let at = |x: usize, y: usize| luma[y * w + x];
            let top = at(x0, y0) + (at(x1, y0) - at(x0, y0)) * fx;
            let bottom = at(x0, y1) + (at(x1, y1) - at(x0, y1)) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    (
        out,
        Rect {
            x0: cv.x0 + ox,
            y0: cv.y0 + oy,
            x1: cv.x0 + ox + ow,
            y1: cv.y0 + oy + oh,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured "photo" w×h, RGB.
    fn photo(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let t = ((x * 7 + y * 13) % 29) as u8;
                v.push((40 + (x * 150 / w) as u8).wrapping_add(t));
                v.push((60 + (y * 120 / h) as u8).wrapping_add(t));
                v.push((90 + ((x + y) * 80 / (w + h)) as u8).wrapping_add(t));
            }
        }
        v
    }

    /// `img` rotated `deg` counter-clockwise as seen about its centre, nearest neighbour,
    /// on a canvas `px`, `py` larger on each side, outside filled with `fill`.
    fn rotated(
        img: &[u8],
        w: usize,
        h: usize,
        deg: f64,
        (px, py): (usize, usize),
        fill: [u8; 3],
    ) -> Vec<u8> {
        let (cw, ch) = (w + 2 * px, h + 2 * py);
        let t = deg.to_radians();
        let (cx, cy) = ((cw as f64 - 1.0) / 2.0, (ch as f64 - 1.0) / 2.0);
        let mut out = Vec::with_capacity(cw * ch * 3);
        for y in 0..ch {
            for x in 0..cw {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                // Inverse of the counter-clockwise rotation, into the source's coordinates.
                let sx = dx * t.cos() - dy * t.sin() + (w as f64 - 1.0) / 2.0;
                let sy = dx * t.sin() + dy * t.cos() + (h as f64 - 1.0) / 2.0;
                let (rx, ry) = (sx.round(), sy.round());
                if rx >= 0.0 && ry >= 0.0 && (rx as usize) < w && (ry as usize) < h {
                    let at = (ry as usize * w + rx as usize) * 3;
                    out.extend_from_slice(&img[at..at + 3]);
                } else {
                    out.extend_from_slice(&fill);
                }
            }
        }
        out
    }

    fn view(data: &[u8], w: usize, h: usize) -> PixelView<'_> {
        PixelView {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    #[test]
    fn reads_the_angle_and_its_direction_from_the_corners() {
        let (w, h) = (320, 240);
        let img = photo(w, h);
        for deg in [4.0, -4.0, 2.0, -2.5, 8.0, 1.0] {
            for fill in [[0, 0, 0], [255, 255, 255]] {
                let q = rotated(&img, w, h, deg, (0, 0), fill);
                let s = skew_angle(view(&q, w, h), &DeskewParams::default())
                    .unwrap_or_else(|| panic!("no skew found at {deg}° {fill:?}"));
                assert!((f64::from(s.degrees) - deg).abs() < 0.3, "{deg}: {s:?}");
                assert!(!s.expanded, "{deg}: {s:?}");
            }
        }
    }

    #[test]
    fn an_enlarged_canvas_gives_back_the_pictures_size() {
        let (w, h) = (300, 200);
        let img = photo(w, h);
        let deg = 5.0f64;
        let t = deg.to_radians();
        // The canvas that holds the rotated picture, rounded up, and 10 more rows of fill
        // above and below (as a border added afterwards would).
        let cw = (w as f64 * t.cos() + h as f64 * t.sin()).ceil() as usize;
        let ch = (w as f64 * t.sin() + h as f64 * t.cos()).ceil() as usize;
        let pad = ((cw - w).div_ceil(2), (ch - h).div_ceil(2) + 10);
        let q = rotated(&img, w, h, deg, pad, [0, 0, 0]);
        let (qw, qh) = (w + 2 * pad.0, h + 2 * pad.1);
        let s = skew_angle(view(&q, qw, qh), &DeskewParams::default()).expect("skew");
        assert!((f64::from(s.degrees) - deg).abs() < 0.3, "{s:?}");
        assert!(s.expanded, "{s:?}");
        let (_, r) = deskewed_luma(view(&q, qw, qh), &s);
        assert!(
            r.width().abs_diff(w) <= 6 && r.height().abs_diff(h) <= 6,
            "{r:?}"
        );
    }

    #[test]
    fn rotating_back_restores_the_picture() {
        let (w, h) = (320, 240);
        let img = photo(w, h);
        let q = rotated(&img, w, h, 4.0, (0, 0), [0, 0, 0]);
        let s = skew_angle(view(&q, w, h), &DeskewParams::default()).expect("skew");
        let (luma, r) = deskewed_luma(view(&q, w, h), &s);
        assert_eq!((r.width(), r.height()), (w, h));
        let orig = luma_image(view(&img, w, h));
        // The centre, away from the corners that were lost, comes back within the error of
        // two nearest/bilinear resamplings of a texture with 29-level steps.
        let mut err = 0.0f64;
        let mut n = 0usize;
        for y in h / 4..3 * h / 4 {
            for x in w / 4..3 * w / 4 {
                err += f64::from((luma[y * w + x] - orig[y * w + x]).abs());
                n += 1;
            }
        }
        assert!(err / (n as f64) < 12.0, "mean error {}", err / n as f64);
    }

    #[test]
    fn upright_pictures_and_dark_corners_are_no_rotation() {
        let (w, h) = (320, 240);
        let img = photo(w, h);
        assert_eq!(skew_angle(view(&img, w, h), &DeskewParams::default()), None);
        // A vignette: dark quarter-discs in the corners are not straight-edged triangles
        // that agree on one angle.
        let mut v = img.clone();
        for y in 0..h {
            for x in 0..w {
                let d = |a: usize, b: usize| a * a + b * b;
                let (dx, dy) = (x.min(w - 1 - x), y.min(h - 1 - y));
                if d(dx, dy) < 900 {
                    let at = (y * w + x) * 3;
                    v[at..at + 3].fill(0);
                }
            }
        }
        assert_eq!(skew_angle(view(&v, w, h), &DeskewParams::default()), None);
        // Flat, tiny and inconsistent views never panic.
        let flat = vec![9u8; w * h * 3];
        assert_eq!(
            skew_angle(view(&flat, w, h), &DeskewParams::default()),
            None
        );
        assert_eq!(
            skew_angle(view(&flat[..30], 10, 1), &DeskewParams::default()),
            None
        );
        assert_eq!(
            skew_angle(view(&flat[..30], 100, 100), &DeskewParams::default()),
            None
        );
    }
}
