//! Deterministic example inputs for the README (`neural-style make-examples`): a photo-like
//! landscape as the content image and a painting-like swirl as the style image. Drawn from
//! formulas, so the repository ships its own inputs with no third-party pictures.

use crate::image_io::Rgb8;

type Color = [f32; 3];

fn mix(a: Color, b: Color, t: f32) -> Color {
    let t = t.clamp(0.0, 1.0);
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Cheap deterministic value noise in [0, 1) (hash of the lattice, smooth interpolation).
fn hash(x: i32, y: i32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343) ^ (y as u32).wrapping_mul(0xd816_3841);
    h = (h ^ (h >> 13)).wrapping_mul(0x5bd1_e995);
    ((h ^ (h >> 15)) & 0xffff) as f32 / 65536.0
}

fn value_noise(x: f32, y: f32) -> f32 {
    let (xi, yi) = (x.floor() as i32, y.floor() as i32);
    let (fx, fy) = (smoothstep(0.0, 1.0, x - xi as f32), smoothstep(0.0, 1.0, y - yi as f32));
    let top = hash(xi, yi) + (hash(xi + 1, yi) - hash(xi, yi)) * fx;
    let bottom = hash(xi, yi + 1) + (hash(xi + 1, yi + 1) - hash(xi, yi + 1)) * fx;
    top + (bottom - top) * fy
}

fn fbm(x: f32, y: f32) -> f32 {
    (0..4).map(|o| value_noise(x * (1 << o) as f32, y * (1 << o) as f32) / (2 << o) as f32).sum()
}

/// Renders `shade(u, v)` (u, v in [0, 1), v downwards) with 3x3 supersampling.
fn render(w: usize, h: usize, shade: impl Fn(f32, f32) -> Color) -> Rgb8 {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f32; 3];
            for sy in 0..3 {
                for sx in 0..3 {
                    let u = (x as f32 + (sx as f32 + 0.5) / 3.0) / w as f32;
                    let v = (y as f32 + (sy as f32 + 0.5) / 3.0) / h as f32;
                    let c = shade(u, v);
                    for k in 0..3 {
                        acc[k] += c[k] / 9.0;
                    }
                }
            }
            data.extend(acc.iter().map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8));
        }
    }
    Rgb8 { w, h, data }
}

/// A landscape: sky gradient with a sun and clouds, two ranges of hills, a house with a red roof,
/// and a tree. `w` x `h` pixels; laid out for a 3:2 frame.
pub fn landscape(w: usize, h: usize) -> Rgb8 {
    let aspect = w as f32 / h as f32;
    render(w, h, |u, v| {
        let x = u * aspect; // square units: x in [0, aspect), v in [0, 1)
                            // Sky: deep blue at the top to pale near the horizon, clouds from fbm.
        let mut c = mix([0.18, 0.38, 0.78], [0.78, 0.88, 0.98], v / 0.6);
        let cloud = smoothstep(0.52, 0.68, fbm(x * 3.0, v * 7.0)) * (1.0 - smoothstep(0.25, 0.45, v));
        c = mix(c, [1.0, 1.0, 1.0], cloud * 0.85);
        // Sun with a soft glow.
        let d_sun = ((x - 0.78 * aspect).powi(2) + (v - 0.2).powi(2)).sqrt();
        c = mix(c, [1.0, 0.93, 0.6], (1.0 - smoothstep(0.0, 0.22, d_sun)) * 0.5);
        c = mix(c, [1.0, 0.95, 0.55], 1.0 - smoothstep(0.075, 0.082, d_sun));
        // Far hills, bluish green.
        let far = 0.55 - 0.07 * (x * 4.0 + 1.0).sin() - 0.03 * (x * 9.0).sin();
        if v > far {
            c = mix([0.36, 0.56, 0.45], [0.28, 0.48, 0.36], (v - far) * 4.0);
        }
        // Near hill, grass with a little texture.
        let near = 0.68 + 0.08 * (x * 2.2 - 0.5).cos() + 0.02 * (x * 11.0).sin();
        if v > near {
            let grass = mix([0.35, 0.62, 0.22], [0.2, 0.42, 0.12], (v - near) * 2.5);
            c = mix(grass, [0.15, 0.3, 0.08], fbm(x * 30.0, v * 60.0) * 0.5);
        }
        // House: walls, roof, door, window, standing on the near hill.
        let (hx0, hx1, base) = (0.32 * aspect, 0.5 * aspect, 0.79);
        let wall_top = 0.6;
        if x > hx0 && x < hx1 && v > wall_top && v < base {
            c = [0.93, 0.87, 0.72];
            let door = x > hx0 + 0.05 && x < hx0 + 0.11 && v > 0.68;
            let window = x > hx1 - 0.14 && x < hx1 - 0.05 && v > 0.64 && v < 0.72;
            if door {
                c = [0.45, 0.27, 0.14];
            } else if window {
                let bar = (x - (hx1 - 0.095)).abs() < 0.004 || (v - 0.68).abs() < 0.004;
                c = if bar { [0.93, 0.93, 0.93] } else { [0.55, 0.75, 0.92] };
            }
        }
        let mid = (hx0 + hx1) / 2.0;
        let half = (hx1 - hx0) / 2.0 + 0.03;
        let roof_top = 0.47;
        if v >= roof_top && v <= wall_top && (x - mid).abs() <= half * (v - roof_top) / (wall_top - roof_top) {
            c = mix([0.72, 0.16, 0.12], [0.5, 0.1, 0.08], (v - roof_top) * 6.0);
        }
        // Tree: trunk and a round crown.
        let tx = 0.18 * aspect;
        if (x - tx).abs() < 0.015 && v > 0.6 && v < 0.78 {
            c = [0.4, 0.26, 0.14];
        }
        let crown = ((x - tx).powi(2) + ((v - 0.56) * 0.9).powi(2)).sqrt() + (fbm(x * 25.0, v * 25.0) - 0.45) * 0.03;
        if crown < 0.075 {
            c = mix([0.16, 0.45, 0.14], [0.08, 0.28, 0.08], fbm(x * 20.0 + 5.0, v * 20.0));
        }
        c
    })
}

/// A painting-like swirl: concentric colour bands bent around a few vortices, with brush-stroke
/// streaks along the bands (Van Gogh-ish blues and yellows).
pub fn swirls(w: usize, h: usize) -> Rgb8 {
    let aspect = w as f32 / h as f32;
    let centres = [(0.3 * aspect, 0.35, 1.0f32), (0.75 * aspect, 0.3, -0.8), (0.55 * aspect, 0.8, 0.7)];
    let palette: [Color; 5] = [[0.07, 0.13, 0.42], [0.16, 0.36, 0.72], [0.45, 0.66, 0.88], [0.95, 0.83, 0.3], [0.98, 0.62, 0.15]];
    render(w, h, |u, v| {
        let x = u * aspect;
        // Angle field: each vortex twists the space around it by an amount falling with distance.
        let (mut px, mut py) = (x, v);
        for &(cx, cy, s) in &centres {
            let (dx, dy) = (px - cx, py - cy);
            let r = (dx * dx + dy * dy).sqrt();
            let twist = s * 3.0 * (-r * 4.0).exp();
            let (sn, cs) = twist.sin_cos();
            px = cx + dx * cs - dy * sn;
            py = cy + dx * sn + dy * cs;
        }
        let bands = (py * 9.0 + (px * 3.0).sin() * 0.8 + fbm(px * 4.0, py * 4.0) * 2.0).rem_euclid(5.0);
        let i = bands.floor() as usize % 5;
        let mut c = mix(palette[i], palette[(i + 1) % 5], smoothstep(0.7, 1.0, bands.fract()));
        // Streaks: high-frequency noise stretched along the band direction.
        let streak = value_noise(px * 6.0, py * 90.0);
        c = mix(c, [c[0] * 0.6, c[1] * 0.6, c[2] * 0.6], smoothstep(0.55, 0.9, streak) * 0.8);
        c = mix(c, [1.0, 0.97, 0.85], smoothstep(0.8, 0.97, value_noise(px * 9.0 + 3.0, py * 70.0)) * 0.6);
        c
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let a = landscape(30, 20);
        assert_eq!((a.w, a.h, a.data.len()), (30, 20, 1800));
        assert_eq!(a, landscape(30, 20));
        let s = swirls(24, 24);
        assert_eq!(s, swirls(24, 24));
        // Not flat: the style image uses much of the range.
        let (lo, hi) = (s.data.iter().min().unwrap(), s.data.iter().max().unwrap());
        assert!(hi - lo > 150);
    }
}
