//! The exponentials of attention's softmax, vectorised: `exp` by range reduction (x = n·ln 2 + r,
//! |r| ≤ ln 2 / 2) and a degree-6 polynomial for e^r, within 2 ulp of the true value over the
//! range a softmax feeds it (x ≤ 0), exactly 1 at 0 and exactly 0 below −87.3 (and at −∞). Every
//! element is computed by the same branch-free arithmetic whether it lands in a vector lane or
//! the scalar tail, and sums are taken in element order (as the scalar softmax took them), so a
//! result depends only on its inputs, never on which code path or batch produced it.

use super::ops::has_fma;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two, so that n · LN2_HI is exact for the n that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5 · 2²³ rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;
/// Below this e^x is under f32's smallest normal number: 0.
const MIN_X: f32 = -87.336_55;
/// Above this e^x overflows: clamped there (softmax never gets there: x ≤ 0).
const MAX_X: f32 = 88.376_26;

/// e^x.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let c = x.clamp(MIN_X, MAX_X);
    let t = c.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, c));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n from the rounded value's low bits (n ≥ −126 after the clamp).
    let bits = ((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32) << 23;
    let v = y * f32::from_bits(bits);
    if x < MIN_X {
        0.0
    } else {
        v
    }
}

/// `x[i] = e^(x[i] − m)` for every element; returns their sum, in element order.
pub fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { exp_sub_sum_fma(x, m) };
    }
    exp_sub_sum_any(x, m)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_sum_fma(x: &mut [f32], m: f32) -> f32 {
    exp_sub_sum_any(x, m)
}

#[inline(always)]
fn exp_sub_sum_any(x: &mut [f32], m: f32) -> f32 {
    for v in x.iter_mut() {
        *v = exp(*v - m);
    }
    x.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn exp_is_within_2_ulp_and_exact_at_the_ends() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        let mut worst = 0;
        let mut x = -87.0f32;
        while x <= 10.0 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_37;
        }
        assert!(worst <= 2, "{worst} ulp");
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        let xs: Vec<f32> = (0..203).map(|i| -((i * 37 % 101) as f32) * 0.173).collect();
        let (mut a, mut b) = (xs.clone(), xs.clone());
        let sa = exp_sub_sum(&mut a, 0.5);
        let sb = exp_sub_sum_any(&mut b, 0.5);
        assert_eq!(sa.to_bits(), sb.to_bits());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        for (v, x) in a.iter().zip(&xs) {
            assert_eq!(v.to_bits(), exp(x - 0.5).to_bits());
        }
    }
}
