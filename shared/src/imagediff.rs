//! Image comparison for shadow mode (DESIGN §8): pixels, never file bytes. The metrics
//! follow Blender's render regression tests (idiff): a pixel *fails* when a channel differs
//! by more than `fail` (0..1), an image matches when at most `fail_percent` of its pixels
//! fail and none differs by more than `hard_fail`; RMSE, PSNR and SSIM are reported beside.
//! Pure functions over RGBA8 buffers; decoding is the worker's job.

use serde::{Deserialize, Serialize};

/// An RGBA8 image.
#[derive(Debug, Clone, Copy)]
pub struct Rgba<'a> {
    pub width: u32,
    pub height: u32,
    /// `width * height * 4` bytes.
    pub data: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetrics {
    pub width: u32,
    pub height: u32,
    pub identical: bool,
    /// Largest channel difference, 0..1.
    pub max_abs: f64,
    /// Mean channel difference, 0..1.
    pub mean_abs: f64,
    /// Root mean square channel difference, 0..1.
    pub rmse: f64,
    /// Peak signal-to-noise ratio in dB; `None` for identical images (infinite).
    pub psnr_db: Option<f64>,
    /// Share of pixels with a channel over `fail`, 0..1.
    pub fail_share: f64,
    /// Structural similarity of the luminance (8×8 windows), 1 for identical images.
    pub ssim: f64,
}

/// Compares two images of the same size; `None` when the sizes differ.
pub fn compare(a: Rgba, b: Rgba, fail: f64) -> Option<ImageMetrics> {
    if (a.width, a.height) != (b.width, b.height) || a.data.len() != b.data.len() {
        return None;
    }
    let limit = (fail * 255.0).round() as i32;
    let (mut max, mut sum, mut sq, mut failing) = (0i32, 0u64, 0u64, 0u64);
    for (pa, pb) in a.data.chunks_exact(4).zip(b.data.chunks_exact(4)) {
        let mut pixel_fails = false;
        for c in 0..4 {
            let d = (i32::from(pa[c]) - i32::from(pb[c])).abs();
            max = max.max(d);
            sum += d as u64;
            sq += (d * d) as u64;
            pixel_fails |= d > limit;
        }
        failing += u64::from(pixel_fails);
    }
    let values = a.data.len().max(1) as f64;
    let pixels = (a.width as f64 * a.height as f64).max(1.0);
    let rmse255 = (sq as f64 / values).sqrt();
    Some(ImageMetrics {
        width: a.width,
        height: a.height,
        identical: max == 0,
        max_abs: f64::from(max) / 255.0,
        mean_abs: sum as f64 / values / 255.0,
        rmse: rmse255 / 255.0,
        psnr_db: (rmse255 > 0.0).then(|| 20.0 * (255.0 / rmse255).log10()),
        fail_share: failing as f64 / pixels,
        ssim: ssim(a, b),
    })
}

/// Whether the metrics are within the thresholds (`fail_percent` in percent).
pub fn matches(m: &ImageMetrics, fail_percent: f64, hard_fail: f64) -> bool {
    m.fail_share * 100.0 <= fail_percent && m.max_abs <= hard_fail
}

fn luma(p: &[u8]) -> f64 {
    0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
}

/// Mean SSIM over 8×8 windows of the luminance (Wang et al. 2004 constants).
fn ssim(a: Rgba, b: Rgba) -> f64 {
    const W: u32 = 8;
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let (mut total, mut windows) = (0.0, 0u32);
    let mut y0 = 0;
    while y0 < a.height {
        let mut x0 = 0;
        while x0 < a.width {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            for y in y0..(y0 + W).min(a.height) {
                for x in x0..(x0 + W).min(a.width) {
                    let i = ((y * a.width + x) * 4) as usize;
                    let (la, lb) = (luma(&a.data[i..i + 4]), luma(&b.data[i..i + 4]));
                    sa += la;
                    sb += lb;
                    saa += la * la;
                    sbb += lb * lb;
                    sab += la * lb;
                    n += 1.0;
                }
            }
            let (ma, mb) = (sa / n, sb / n);
            let (va, vb, cov) = (saa / n - ma * ma, sbb / n - mb * mb, sab / n - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            windows += 1;
            x0 += W;
        }
        y0 += W;
    }
    if windows == 0 {
        1.0
    } else {
        total / f64::from(windows)
    }
}

/// The absolute difference as an RGB8 image, scaled so the largest difference is white
/// (a small difference stays visible), with failing pixels at full red.
pub fn diff_image(a: Rgba, b: Rgba, fail: f64) -> Vec<u8> {
    let limit = (fail * 255.0).round() as i32;
    let max = a.data.iter().zip(b.data).map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs()).max().unwrap_or(0).max(1);
    let mut out = Vec::with_capacity(a.data.len() / 4 * 3);
    for (pa, pb) in a.data.chunks_exact(4).zip(b.data.chunks_exact(4)) {
        let d: Vec<i32> = (0..4).map(|c| (i32::from(pa[c]) - i32::from(pb[c])).abs()).collect();
        if d.iter().any(|&v| v > limit) {
            out.extend([255, 0, 0]);
        } else {
            out.extend((0..3).map(|c| ((d[c].max(d[3]) * 255) / max) as u8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
        let f = &f;
        (0..h).flat_map(|y| (0..w).flat_map(move |x| f(x, y))).collect()
    }

    #[test]
    fn identical_images() {
        let a = img(16, 16, |x, y| [x as u8 * 10, y as u8 * 10, 7, 255]);
        let m = compare(Rgba { width: 16, height: 16, data: &a }, Rgba { width: 16, height: 16, data: &a }, 0.016).unwrap();
        assert!(m.identical);
        assert_eq!((m.max_abs, m.rmse, m.fail_share, m.psnr_db), (0.0, 0.0, 0.0, None));
        assert!((m.ssim - 1.0).abs() < 1e-12);
        assert!(matches(&m, 1.0, 1.0));
    }

    #[test]
    fn one_changed_pixel() {
        let a = img(10, 10, |_, _| [100, 100, 100, 255]);
        let mut b = a.clone();
        b[0] = 200; // pixel (0,0), red channel +100
        let m = compare(Rgba { width: 10, height: 10, data: &a }, Rgba { width: 10, height: 10, data: &b }, 0.016).unwrap();
        assert!(!m.identical);
        assert!((m.max_abs - 100.0 / 255.0).abs() < 1e-12);
        assert!((m.fail_share - 0.01).abs() < 1e-12, "1 pixel of 100");
        assert!(matches(&m, 1.0, 1.0), "1% failing is within fail_percent 1%");
        assert!(!matches(&m, 0.5, 1.0));
        assert!(!matches(&m, 1.0, 0.3), "but it breaks a hard_fail of 0.3");
        let d = diff_image(Rgba { width: 10, height: 10, data: &a }, Rgba { width: 10, height: 10, data: &b }, 0.016);
        assert_eq!(&d[..3], &[255, 0, 0]);
        assert!(d[3..].iter().all(|&v| v == 0));
    }

    #[test]
    fn a_known_rmse_and_psnr() {
        // Every channel of every pixel differs by 51 (0.2): RMSE 0.2, PSNR 20·log10(1/0.2) ≈ 13.98 dB.
        let a = img(4, 4, |_, _| [0, 0, 0, 0]);
        let b = img(4, 4, |_, _| [51, 51, 51, 51]);
        let m = compare(Rgba { width: 4, height: 4, data: &a }, Rgba { width: 4, height: 4, data: &b }, 0.016).unwrap();
        assert!((m.rmse - 0.2).abs() < 1e-12);
        assert!((m.psnr_db.unwrap() - 13.979_400_086_720_377).abs() < 1e-9);
        assert!((m.mean_abs - 0.2).abs() < 1e-12);
        assert_eq!(m.fail_share, 1.0);
        assert!(m.ssim < 1.0);
    }

    #[test]
    fn different_sizes_do_not_compare() {
        let a = img(4, 4, |_, _| [0; 4]);
        let b = img(2, 8, |_, _| [0; 4]);
        assert!(compare(Rgba { width: 4, height: 4, data: &a }, Rgba { width: 2, height: 8, data: &b }, 0.016).is_none());
    }
}
