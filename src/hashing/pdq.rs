//! PDQ, written from Meta's algorithm description and checked bit for bit against the
//! reference C++ (see `tests/pdq_conformance.rs` and `docs/conformance.md`).
//!
//! Bit-exactness constrains every float operation: each output value must be produced by the
//! same sequence of `f32` operations, in the same order, as the reference. What we are free to
//! change is *which* values are computed together and *when*:
//!
//! * The two Jarosz passes (row box filter, column box filter, twice) are streamed: rows are
//!   filtered eight at a time in a transposed "lanes" layout so the running sums of eight rows
//!   advance together (vectorisable, no serial dependency), and the column filter consumes rows
//!   from a small ring buffer instead of a second full-size image buffer. Memory is
//!   O(width × window) instead of O(width × height), and the working set stays in cache.
//! * The second row pass only divides (the expensive step) at the 64 sampled columns, and the
//!   second column pass only runs over those 64 columns. The running sums themselves still visit
//!   every element, since each sampled value depends on the whole running-sum history.

use std::fmt;

/// Images with a side below this hash to all zeros with quality 0, as in the reference.
pub const MIN_HASHABLE_DIM: usize = 5;

/// The side above which the `ref512` pipeline squashes an image to 512×512.
pub const REF512_SIDE: usize = 512;

const LANES: usize = 8;
type Lane = [f32; LANES];

/// A 256-bit PDQ hash: bit `k` is bit `k % 16` of word `k / 16` (the reference's layout).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash256 {
    pub words: [u16; 16],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    #[error("a PDQ hash is 64 hex digits, got {0} characters")]
    Length(usize),
    #[error("a PDQ hash is hex digits only")]
    NotHex,
}

impl Hash256 {
    pub fn bit(&self, k: usize) -> bool {
        (self.words[k / 16] >> (k % 16)) & 1 == 1
    }

    fn set_bit(&mut self, k: usize) {
        self.words[k / 16] |= 1 << (k % 16);
    }

    pub fn hamming(&self, other: &Hash256) -> u32 {
        self.words
            .iter()
            .zip(other.words.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// ThreatExchange's hex form: word 15 first, four digits a word.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for w in self.words.iter().rev() {
            s.push_str(&format!("{w:04x}"));
        }
        s
    }

    pub fn from_hex(s: &str) -> Result<Self, ParseHashError> {
        if s.len() != 64 {
            return Err(ParseHashError::Length(s.len()));
        }
        let mut words = [0u16; 16];
        for (i, chunk) in s.as_bytes().chunks(4).enumerate() {
            let txt = std::str::from_utf8(chunk).map_err(|_| ParseHashError::NotHex)?;
            words[15 - i] = u16::from_str_radix(txt, 16).map_err(|_| ParseHashError::NotHex)?;
        }
        Ok(Hash256 { words })
    }

    /// Big-endian bytes in hex order (byte 0 is the high byte of word 15).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, w) in self.words.iter().rev().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({})", self.to_hex())
    }
}

/// The eight dihedral transforms, in the reference's order.
pub const DIHEDRAL_NAMES: [&str; 8] = [
    "orig",
    "rot90",
    "rot180",
    "rot270",
    "flipx",
    "flipy",
    "flipplus1",
    "flipminus1",
];

/// A PDQ result: the hash of the image as stored, its quality (0–100) and the hashes of its
/// eight dihedral transforms (index 0 equals `hash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PdqHash {
    pub hash: Hash256,
    pub quality: u8,
    pub dihedral: [Hash256; 8],
}

/// Which pre-processing runs before the PDQ core.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PdqMode {
    /// No pre-resize: python-threatexchange / HMA, PyPI `pdqhash`, the Java port.
    #[default]
    Full,
    /// Meta's C++ tool: a side over 512 px → nearest-neighbour squash to exactly 512×512.
    Ref512,
}

crate::from_str_by_name!(PdqMode, "PDQ mode");

impl fmt::Display for PdqMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::names::name(self))
    }
}

/// 8-bit pixels, grey (1 channel) or RGB (3 channels interleaved), row-major, no padding.
#[derive(Clone, Copy, Debug)]
pub struct PixelView<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: &'a [u8],
}

/// Luma of one pixel as the references compute it.
///
/// RGB: the reference core is fed `float32(R*0.299 + G*0.587 + B*0.114)` evaluated in double
/// precision (PyPI `pdqhash` does it in numpy; it is also the correctly rounded luma that the
/// C++ tool's float expression approximates). Grey: the value itself, as the C++ tool's grey path.
///
/// The three products come from tables: `f64::from(v) * c` is exact-same in a table as inline,
/// and the lookups replace three int→double conversions and multiplies per pixel.
#[inline(always)]
fn luma_rgb(t: &LumaTables, r: u8, g: u8, b: u8) -> f32 {
    (t[0][usize::from(r)] + t[1][usize::from(g)] + t[2][usize::from(b)]) as f32
}

type LumaTables = [[f64; 256]; 3];

fn luma_tables() -> &'static LumaTables {
    static T: std::sync::OnceLock<LumaTables> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = [[0f64; 256]; 3];
        for (table, coeff) in t.iter_mut().zip([0.299f64, 0.587, 0.114]) {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = v as f64 * coeff;
            }
        }
        t
    })
}

/// A source of luma rows for the streaming filter.
trait LumaRows {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    fn fill_row(&self, y: usize, out: &mut [f32]);

    /// Rows `y0..y0+n` (n ≤ 8) straight into the lane layout; `scratch` holds 8 rows.
    fn fill_lanes(&self, y0: usize, n: usize, lanes: &mut [Lane], scratch: &mut [f32]) {
        let w = self.width();
        for r in 0..n {
            self.fill_row(y0 + r, &mut scratch[r * w..(r + 1) * w]);
        }
        transpose_in(scratch, n, w, lanes);
    }
}

struct DirectRows<'a>(PixelView<'a>);

impl LumaRows for DirectRows<'_> {
    fn width(&self) -> usize {
        self.0.width
    }
    fn height(&self) -> usize {
        self.0.height
    }
    fn fill_row(&self, y: usize, out: &mut [f32]) {
        let v = &self.0;
        let stride = v.width * v.channels;
        let row = &v.data[y * stride..(y + 1) * stride];
        if v.channels == 1 {
            for (o, &p) in out.iter_mut().zip(row) {
                *o = f32::from(p);
            }
        } else {
            let t = luma_tables();
            for (o, px) in out.iter_mut().zip(row.chunks_exact(3)) {
                *o = luma_rgb(t, px[0], px[1], px[2]);
            }
        }
    }

    fn fill_lanes(&self, y0: usize, n: usize, lanes: &mut [Lane], _scratch: &mut [f32]) {
        let v = &self.0;
        let stride = v.width * v.channels;
        if n < LANES {
            lanes.iter_mut().for_each(|l| *l = [0.0; LANES]);
        }
        let t = luma_tables();
        for r in 0..n {
            let y = y0 + r;
            let row = &v.data[y * stride..(y + 1) * stride];
            if v.channels == 1 {
                for (l, &p) in lanes.iter_mut().zip(row) {
                    l[r] = f32::from(p);
                }
            } else {
                for (l, px) in lanes.iter_mut().zip(row.chunks_exact(3)) {
                    l[r] = luma_rgb(t, px[0], px[1], px[2]);
                }
            }
        }
    }
}

/// The `ref512` squash: source index `floor(i * N / 512)` on each axis, aspect not kept.
struct SquashedRows<'a> {
    view: PixelView<'a>,
    cols: Vec<usize>,
}

impl<'a> SquashedRows<'a> {
    fn new(view: PixelView<'a>) -> Self {
        let cols = (0..REF512_SIDE)
            .map(|x| x * view.width / REF512_SIDE)
            .collect();
        SquashedRows { view, cols }
    }
}

impl LumaRows for SquashedRows<'_> {
    fn width(&self) -> usize {
        REF512_SIDE
    }
    fn height(&self) -> usize {
        REF512_SIDE
    }
    fn fill_row(&self, y: usize, out: &mut [f32]) {
        let v = &self.view;
        let sy = y * v.height / REF512_SIDE;
        let stride = v.width * v.channels;
        let row = &v.data[sy * stride..(sy + 1) * stride];
        let t = luma_tables();
        for (o, &sx) in out.iter_mut().zip(&self.cols) {
            *o = if v.channels == 1 {
                f32::from(row[sx])
            } else {
                let p = &row[sx * 3..sx * 3 + 3];
                luma_rgb(t, p[0], p[1], p[2])
            };
        }
    }
}

/// Hash pixels with the given pipeline.
///
/// # Panics
/// Never for a consistent view; the caller (our decoder) guarantees
/// `data.len() == width * height * channels` and `channels` is 1 or 3.
pub fn pdq_hash(view: PixelView<'_>, mode: PdqMode) -> PdqHash {
    debug_assert!(view.channels == 1 || view.channels == 3);
    debug_assert_eq!(view.data.len(), view.width * view.height * view.channels);
    let squash = mode == PdqMode::Ref512 && (view.width > REF512_SIDE || view.height > REF512_SIDE);
    if squash {
        hash_rows(&SquashedRows::new(view))
    } else {
        hash_rows(&DirectRows(view))
    }
}

/// The luma PDQ hashes, one float per pixel (row-major), for views derived from the image (a
/// rotation) that are built in luma rather than in RGB.
pub fn luma_image(view: PixelView<'_>) -> Vec<f32> {
    let n = view.width * view.height;
    match view.channels {
        3 => {
            let t = luma_tables();
            view.data[..n * 3]
                .chunks_exact(3)
                .map(|p| luma_rgb(t, p[0], p[1], p[2]))
                .collect()
        }
        _ => view.data[..n].iter().map(|&v| f32::from(v)).collect(),
    }
}

/// Hash a float luma image directly (row-major, `width * height` values).
pub fn pdq_hash_luma(luma: &[f32], width: usize, height: usize) -> PdqHash {
    struct FloatRows<'a>(&'a [f32], usize, usize);
    impl LumaRows for FloatRows<'_> {
        fn width(&self) -> usize {
            self.1
        }
        fn height(&self) -> usize {
            self.2
        }
        fn fill_row(&self, y: usize, out: &mut [f32]) {
            out.copy_from_slice(&self.0[y * self.1..(y + 1) * self.1]);
        }
    }
    hash_rows(&FloatRows(luma, width, height))
}

/// RGB24 rows `stride` bytes apart (a decoded video frame), row-major.
#[derive(Clone, Copy, Debug)]
pub struct StridedRgb<'a> {
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub data: &'a [u8],
}

/// PDQ of an RGB frame with the luma of Meta's C++ (`fillFloatLumaFromRGB`): single-precision
/// `0.299f·R + 0.587f·G + 0.114f·B`, evaluated left to right. This is what Meta's vPDQ hashes
/// frames with, so vPDQ frames are bit-identical to the reference; it differs from the image
/// path's double-precision luma only where the two roundings land on different floats.
///
/// # Panics
/// Never for a consistent frame: the caller (our video decoder) guarantees
/// `stride >= 3 * width` and `data.len() >= stride * (height - 1) + 3 * width`.
pub fn pdq_hash_rgb_f32(frame: StridedRgb<'_>) -> PdqHash {
    struct Rows<'a>(StridedRgb<'a>, &'static [[f32; 256]; 3]);
    impl LumaRows for Rows<'_> {
        fn width(&self) -> usize {
            self.0.width
        }
        fn height(&self) -> usize {
            self.0.height
        }
        fn fill_row(&self, y: usize, out: &mut [f32]) {
            let f = &self.0;
            let t = self.1;
            let row = &f.data[y * f.stride..y * f.stride + 3 * f.width];
            for (o, px) in out.iter_mut().zip(row.chunks_exact(3)) {
                *o = t[0][usize::from(px[0])] + t[1][usize::from(px[1])] + t[2][usize::from(px[2])];
            }
        }
    }
    static T: std::sync::OnceLock<[[f32; 256]; 3]> = std::sync::OnceLock::new();
    // `f32::from(v) * c` is the same rounding in a table as inline.
    let t = T.get_or_init(|| {
        let mut t = [[0f32; 256]; 3];
        for (table, coeff) in t.iter_mut().zip([0.299f32, 0.587, 0.114]) {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = v as f32 * coeff;
            }
        }
        t
    });
    hash_rows(&Rows(frame, t))
}

fn hash_rows(src: &impl LumaRows) -> PdqHash {
    let (w, h) = (src.width(), src.height());
    if w < MIN_HASHABLE_DIM || h < MIN_HASHABLE_DIM {
        return PdqHash {
            hash: Hash256::default(),
            quality: 0,
            dihedral: [Hash256::default(); 8],
        };
    }
    let buf = if w == 64 && h == 64 {
        // The reference skips the blur when the input is already 64×64.
        let mut b = [[0f32; 64]; 64];
        for (y, row) in b.iter_mut().enumerate() {
            src.fill_row(y, row);
        }
        b
    } else {
        jarosz_decimate(src)
    };
    let quality = quality_metric(&buf);
    let dct = dct64_to_16(&buf);
    let dihedral = dihedral_hashes(&dct);
    PdqHash {
        hash: dihedral[0],
        quality,
        dihedral,
    }
}

/// `ceil(dim / 128)`: half a 64-cell block per pass, two passes.
pub fn jarosz_window(dim: usize) -> usize {
    dim.div_ceil(2 * 64)
}

/// The reference's phase counts for a running box filter of `window` over `n` values.
#[derive(Clone, Copy)]
struct Phases {
    p1: usize,
    p2: usize,
    p3: usize,
    p4: usize,
}

impl Phases {
    fn new(n: usize, window: usize) -> Self {
        let half = (window + 2) / 2;
        Phases {
            p1: half - 1,
            p2: window - half + 1,
            p3: n - window,
            p4: half - 1,
        }
    }

    /// One running-sum step: add `add`, then subtract `sub`, then maybe emit
    /// output `out` divided by the current window size.
    fn steps(self) -> impl Iterator<Item = Step> {
        let Phases { p1, p2, p3, p4 } = self;
        let ph1 = (0..p1).map(move |i| Step {
            add: Some(i),
            sub: None,
            out: None,
            cws: (i + 1) as f32,
        });
        let ph2 = (0..p2).map(move |i| Step {
            add: Some(p1 + i),
            sub: None,
            out: Some(i),
            cws: (p1 + i + 1) as f32,
        });
        let full = (p1 + p2) as f32;
        let ph3 = (0..p3).map(move |i| Step {
            add: Some(p1 + p2 + i),
            sub: Some(i),
            out: Some(p2 + i),
            cws: full,
        });
        let ph4 = (0..p4).map(move |i| Step {
            add: None,
            sub: Some(p3 + i),
            out: Some(p2 + p3 + i),
            cws: full - (i + 1) as f32,
        });
        ph1.chain(ph2).chain(ph3).chain(ph4)
    }
}

#[derive(Clone, Copy)]
struct Step {
    add: Option<usize>,
    sub: Option<usize>,
    out: Option<usize>,
    cws: f32,
}

/// Running box filter along `inp` (eight independent rows in lanes), handing every output
/// position and its (sum, window size) to `emit`, which decides whether to divide and store.
#[inline(always)]
fn box_lanes(inp: &[Lane], window: usize, mut emit: impl FnMut(usize, &Lane, f32)) {
    let Phases { p1, p2, p3, p4 } = Phases::new(inp.len(), window);
    let mut sum: Lane = [0.0; LANES];
    let mut cws = 0f32;
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    for _ in 0..p1 {
        lane_add(&mut sum, &inp[ri]);
        cws += 1.0;
        ri += 1;
    }
    for _ in 0..p2 {
        lane_add(&mut sum, &inp[ri]);
        cws += 1.0;
        emit(oi, &sum, cws);
        ri += 1;
        oi += 1;
    }
    for _ in 0..p3 {
        lane_add(&mut sum, &inp[ri]);
        lane_sub(&mut sum, &inp[li]);
        emit(oi, &sum, cws);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..p4 {
        lane_sub(&mut sum, &inp[li]);
        cws -= 1.0;
        emit(oi, &sum, cws);
        li += 1;
        oi += 1;
    }
}

#[inline(always)]
fn lane_add(a: &mut Lane, b: &Lane) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

#[inline(always)]
fn lane_sub(a: &mut Lane, b: &Lane) {
    for (x, y) in a.iter_mut().zip(b) {
        *x -= *y;
    }
}

#[inline(always)]
fn lane_div(a: &Lane, d: f32) -> Lane {
    let mut o = [0f32; LANES];
    for (o, x) in o.iter_mut().zip(a) {
        *o = *x / d;
    }
    o
}

/// The sample position the reference's decimation takes for output cell `i` of 64.
fn sample_index(i: usize, n: usize) -> usize {
    (((i as f64 + 0.5) * n as f64) / 64.0) as usize
}

/// Two Jarosz passes (row box, column box, twice) and the 64×64 centre decimation, streamed.
fn jarosz_decimate(src: &impl LumaRows) -> [[f32; 64]; 64] {
    let (w, h) = (src.width(), src.height());
    let win_x = jarosz_window(w);
    let win_y = jarosz_window(h);
    let sample_cols: Vec<usize> = (0..64).map(|j| sample_index(j, w)).collect();
    let sample_rows: Vec<usize> = (0..64).map(|i| sample_index(i, h)).collect();

    // Stage 1: luma rows → row box filter (pass 1), produced eight rows at a time into a ring.
    let ring_rows = win_y + LANES + 1;
    let mut ring = vec![0f32; ring_rows * w];
    let mut produced = 0usize;
    let mut rows8 = vec![0f32; LANES * w];
    let mut lanes_in: Vec<Lane> = vec![[0.0; LANES]; w];
    let mut lanes_out: Vec<Lane> = vec![[0.0; LANES]; w];

    // Stage 2 output: column-box rows (pass 1), gathered eight at a time for the pass-2 row box.
    let mut strip = vec![0f32; LANES * w];
    let mut strip_len = 0usize;
    let mut strip_first = 0usize;
    // Pass-2 row box, kept only at the sampled columns: h × 64.
    let mut at_cols = vec![0f32; h * 64];

    let mut acc = vec![0f32; w];
    for step in Phases::new(h, win_y).steps() {
        if let Some(ri) = step.add {
            while ri >= produced {
                let n = LANES.min(h - produced);
                src.fill_lanes(produced, n, &mut lanes_in, &mut rows8);
                box_lanes(&lanes_in, win_x, |oi, sum, cws| {
                    lanes_out[oi] = lane_div(sum, cws);
                });
                for r in 0..n {
                    let slot = (produced + r) % ring_rows;
                    let dst = &mut ring[slot * w..(slot + 1) * w];
                    for (d, l) in dst.iter_mut().zip(&lanes_out) {
                        *d = l[r];
                    }
                }
                produced += n;
            }
            let slot = ri % ring_rows;
            for (a, x) in acc.iter_mut().zip(&ring[slot * w..(slot + 1) * w]) {
                *a += *x;
            }
        }
        if let Some(li) = step.sub {
            let slot = li % ring_rows;
            for (a, x) in acc.iter_mut().zip(&ring[slot * w..(slot + 1) * w]) {
                *a -= *x;
            }
        }
        if let Some(oi) = step.out {
            if strip_len == 0 {
                strip_first = oi;
            }
            let dst = &mut strip[strip_len * w..(strip_len + 1) * w];
            for (d, a) in dst.iter_mut().zip(&acc) {
                *d = *a / step.cws;
            }
            strip_len += 1;
            if strip_len == LANES || oi == h - 1 {
                transpose_in(&strip, strip_len, w, &mut lanes_in);
                let mut next = 0usize;
                box_lanes(&lanes_in, win_x, |oi, sum, cws| {
                    // Several cells can share a column when w < 64.
                    while next < 64 && sample_cols[next] == oi {
                        let v = lane_div(sum, cws);
                        for r in 0..strip_len {
                            at_cols[(strip_first + r) * 64 + next] = v[r];
                        }
                        next += 1;
                    }
                });
                strip_len = 0;
            }
        }
    }

    // Pass-2 column box over the 64 sampled columns; keep the 64 sampled rows.
    let mut out = [[0f32; 64]; 64];
    let mut acc64 = [0f32; 64];
    let mut next_row = 0usize;
    for step in Phases::new(h, win_y).steps() {
        if let Some(ri) = step.add {
            for (a, x) in acc64.iter_mut().zip(&at_cols[ri * 64..ri * 64 + 64]) {
                *a += *x;
            }
        }
        if let Some(li) = step.sub {
            for (a, x) in acc64.iter_mut().zip(&at_cols[li * 64..li * 64 + 64]) {
                *a -= *x;
            }
        }
        if let Some(oi) = step.out {
            while next_row < 64 && sample_rows[next_row] == oi {
                for (o, a) in out[next_row].iter_mut().zip(&acc64) {
                    *o = *a / step.cws;
                }
                next_row += 1;
            }
        }
    }
    out
}

/// Row-major `rows` (n ≤ 8 rows of `w`) into lanes; unused lanes are zero and ignored.
fn transpose_in(rows: &[f32], n: usize, w: usize, lanes: &mut [Lane]) {
    if n < LANES {
        lanes.iter_mut().for_each(|l| *l = [0.0; LANES]);
    }
    for r in 0..n {
        let row = &rows[r * w..(r + 1) * w];
        for (l, v) in lanes.iter_mut().zip(row) {
            l[r] = *v;
        }
    }
}

fn quality_metric(b: &[[f32; 64]; 64]) -> u8 {
    let grad = |u: f32, v: f32| -> i32 {
        let d = ((u - v) * 100.0) / 255.0;
        (d as i32).abs()
    };
    let mut sum: i32 = 0;
    for pair in b.windows(2) {
        for (u, v) in pair[0].iter().zip(&pair[1]) {
            sum += grad(*u, *v);
        }
    }
    for row in b.iter() {
        for uv in row.windows(2) {
            sum += grad(uv[0], uv[1]);
        }
    }
    (sum / 90).min(100) as u8
}

/// The 16×64 DCT basis (rows 1..=16, no DC), as the reference builds it.
fn dct_matrix() -> &'static [[f32; 64]; 16] {
    static M: std::sync::OnceLock<[[f32; 64]; 16]> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let scale = (2.0f64 / 64.0).sqrt() as f32;
        let mut m = [[0f32; 64]; 16];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let arg = (std::f64::consts::PI / 2.0 / 64.0) * (i + 1) as f64 * (2 * j + 1) as f64;
                *v = (f64::from(scale) * arg.cos()) as f32;
            }
        }
        m
    })
}

/// B = D A Dᵀ, each sum taken in the reference's order (k ascending) from 0.0.
fn dct64_to_16(a: &[[f32; 64]; 64]) -> [[f32; 16]; 16] {
    let d = dct_matrix();
    let mut t = [[0f32; 64]; 16];
    for (trow, drow) in t.iter_mut().zip(d.iter()) {
        for (k, arow) in a.iter().enumerate() {
            let dk = drow[k];
            for (tv, av) in trow.iter_mut().zip(arow) {
                *tv += dk * *av;
            }
        }
    }
    let mut b = [[0f32; 16]; 16];
    for (brow, trow) in b.iter_mut().zip(t.iter()) {
        for (bv, drow) in brow.iter_mut().zip(d.iter()) {
            let mut s = 0f32;
            for (tv, dv) in trow.iter().zip(drow) {
                s += *tv * *dv;
            }
            *bv = s;
        }
    }
    b
}

/// The eight dihedral variants from one DCT, by sign flips and transposition.
fn dihedral_hashes(a: &[[f32; 16]; 16]) -> [Hash256; 8] {
    let mut out = [Hash256::default(); 8];
    let mut b = [[0f32; 16]; 16];
    for (t, slot) in out.iter_mut().enumerate() {
        for i in 0..16 {
            for j in 0..16 {
                let v = a[i][j];
                let (odd_i, odd_j, odd_ij) = (i & 1 == 1, j & 1 == 1, (i + j) & 1 == 1);
                match t {
                    0 => b[i][j] = v,
                    1 => b[j][i] = if odd_j { v } else { -v },
                    2 => b[i][j] = if odd_ij { -v } else { v },
                    3 => b[j][i] = if odd_i { v } else { -v },
                    4 => b[i][j] = if odd_i { v } else { -v },
                    5 => b[i][j] = if odd_j { v } else { -v },
                    6 => b[j][i] = v,
                    _ => b[j][i] = if odd_ij { -v } else { v },
                }
            }
        }
        *slot = bits_from_dct(&b);
    }
    out
}

/// Bit `i*16+j` set when the coefficient is strictly above the lower median (`sorted[127]`).
fn bits_from_dct(b: &[[f32; 16]; 16]) -> Hash256 {
    let mut flat = [0f32; 256];
    for (i, row) in b.iter().enumerate() {
        flat[i * 16..i * 16 + 16].copy_from_slice(row);
    }
    let mut sorted = flat;
    let (_, median, _) = sorted.select_nth_unstable_by(127, |x, y| x.total_cmp(y));
    let median = *median;
    let mut h = Hash256::default();
    for (k, v) in flat.iter().enumerate() {
        if *v > median {
            h.set_bit(k);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_puts_word_15_first() {
        let mut h = Hash256::default();
        h.words[15] = 0xabcd;
        h.words[0] = 0x0012;
        let hex = h.to_hex();
        assert!(hex.starts_with("abcd"));
        assert!(hex.ends_with("0012"));
        assert_eq!(Hash256::from_hex(&hex).unwrap(), h);
        assert!(Hash256::from_hex("zz").is_err());
        assert!(Hash256::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn phases_cover_every_position_once() {
        for n in [5usize, 6, 63, 64, 65, 127, 128, 129, 1000, 4097] {
            let w = jarosz_window(n);
            let steps: Vec<Step> = Phases::new(n, w).steps().collect();
            let outs: Vec<usize> = steps.iter().filter_map(|s| s.out).collect();
            assert_eq!(outs, (0..n).collect::<Vec<_>>(), "n={n}");
            let adds: Vec<usize> = steps.iter().filter_map(|s| s.add).collect();
            assert_eq!(adds, (0..n).collect::<Vec<_>>(), "n={n}");
        }
    }

    /// The straightforward reference algorithm (full buffers, strided column passes), to check
    /// the streamed filter against on shapes the conformance files do not cover.
    fn naive(luma: &[f32], w: usize, h: usize) -> [[f32; 64]; 64] {
        fn box1d(inp: &[f32], out: &mut [f32], n: usize, stride: usize, win: usize) {
            let mut sum = 0f32;
            let mut cur = 0f32;
            let (mut li, mut ri, mut oi) = (0, 0, 0);
            let p = Phases::new(n, win);
            for _ in 0..p.p1 {
                sum += inp[ri];
                cur += 1.0;
                ri += stride;
            }
            for _ in 0..p.p2 {
                sum += inp[ri];
                cur += 1.0;
                out[oi] = sum / cur;
                ri += stride;
                oi += stride;
            }
            for _ in 0..p.p3 {
                sum += inp[ri];
                sum -= inp[li];
                out[oi] = sum / cur;
                li += stride;
                ri += stride;
                oi += stride;
            }
            for _ in 0..p.p4 {
                sum -= inp[li];
                cur -= 1.0;
                out[oi] = sum / cur;
                li += stride;
                oi += stride;
            }
        }
        let mut b1 = luma.to_vec();
        let mut b2 = vec![0f32; w * h];
        let (wx, wy) = (jarosz_window(w), jarosz_window(h));
        for _ in 0..2 {
            for y in 0..h {
                box1d(&b1[y * w..], &mut b2[y * w..], w, 1, wx);
            }
            for x in 0..w {
                box1d(&b2[x..], &mut b1[x..], h, w, wy);
            }
        }
        let mut out = [[0f32; 64]; 64];
        for (i, row) in out.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = b1[sample_index(i, h) * w + sample_index(j, w)];
            }
        }
        out
    }

    fn pseudo_random_luma(w: usize, h: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..w * h)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((s >> 33) % 64) as f32;
                let x = (i % w) as f32;
                let y = (i / w) as f32;
                (x * 0.37 + y * 0.11 + noise).rem_euclid(255.0)
            })
            .collect()
    }

    #[test]
    fn streamed_filter_equals_naive_filter_bit_for_bit() {
        struct Rows<'a>(&'a [f32], usize, usize);
        impl LumaRows for Rows<'_> {
            fn width(&self) -> usize {
                self.1
            }
            fn height(&self) -> usize {
                self.2
            }
            fn fill_row(&self, y: usize, out: &mut [f32]) {
                out.copy_from_slice(&self.0[y * self.1..(y + 1) * self.1]);
            }
        }
        for (i, &(w, h)) in [
            (5, 5),
            (7, 300),
            (63, 65),
            (129, 7),
            (200, 131),
            (640, 480),
            (1031, 777),
        ]
        .iter()
        .enumerate()
        {
            let luma = pseudo_random_luma(w, h, i as u64);
            let fast = jarosz_decimate(&Rows(&luma, w, h));
            let slow = naive(&luma, w, h);
            for r in 0..64 {
                for c in 0..64 {
                    assert_eq!(
                        fast[r][c].to_bits(),
                        slow[r][c].to_bits(),
                        "{w}x{h} at {r},{c}"
                    );
                }
            }
        }
    }

    #[test]
    fn tiny_images_hash_to_zero() {
        let data = vec![128u8; 4 * 100];
        let h = pdq_hash(
            PixelView {
                width: 4,
                height: 100,
                channels: 1,
                data: &data,
            },
            PdqMode::Full,
        );
        assert_eq!(h.quality, 0);
        assert_eq!(h.hash, Hash256::default());
    }
}
