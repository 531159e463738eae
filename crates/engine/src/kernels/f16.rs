//! IEEE half-precision conversions in plain integer arithmetic (round to nearest even, with
//! subnormals, infinities and NaN), for the f16 KV cache. The SIMD kernels use the CPU's F16C
//! instructions, which give the same bits.

/// `x` rounded to the nearest half-precision value (ties to even), as its bits.
pub fn from_f32(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = b & 0x7fff_ffff;
    if a >= 0x7f80_0000 {
        // Infinity stays infinity; NaN stays a (quiet) NaN.
        return sign | 0x7c00 | if a > 0x7f80_0000 { 0x0200 } else { 0 };
    }
    if a < 0x3880_0000 {
        // Below 2^-14: a subnormal half, in units of 2^-24. Scaling by 2^24 is exact, and adding
        // and subtracting 1.5·2^23 rounds to the nearest integer, ties to even.
        const ROUND: f32 = 12_582_912.0;
        let units = (f32::from_bits(a) * 16_777_216.0 + ROUND) - ROUND;
        return sign | units as u16;
    }
    // Normal: drop 13 mantissa bits rounding to nearest even (a carry may bump the exponent),
    // rebias the exponent from 127 to 15; anything at or past 2^16 becomes infinity.
    let rounded = (a + 0x0fff + ((a >> 13) & 1)) >> 13;
    sign | (rounded - (112 << 10)).min(0x7c00) as u16
}

/// The value of half-precision bits `h` (exact).
#[inline(always)]
pub fn to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let em = (h & 0x7fff) as u32;
    let bits = if em >= 0x7c00 {
        0x7f80_0000 | ((em & 0x3ff) << 13)
    } else if em >= 0x0400 {
        (em << 13) + (112 << 23)
    } else {
        // Subnormal or zero: an integer number of 2^-24 units, exact in f32.
        (em as f32 * 5.960_464_5e-8).to_bits()
    };
    f32::from_bits(sign | bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_half_and_rounds_to_nearest_even() {
        for h in 0..=u16::MAX {
            let x = to_f32(h);
            if x.is_nan() {
                assert!(to_f32(from_f32(x)).is_nan());
            } else {
                assert_eq!(from_f32(x), h, "{h:#06x}");
            }
        }
        // Halfway between 1 and the next half (1 + 2^-10) goes to the even one, 1.
        assert_eq!(from_f32(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(from_f32(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(from_f32(65504.0), 0x7bff);
        assert_eq!(from_f32(65520.0), 0x7c00);
        assert_eq!(from_f32(-1e9), 0xfc00);
        assert_eq!(from_f32(2f32.powi(-25)), 0);
        assert_eq!(from_f32(3.0 * 2f32.powi(-25)), 2);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn agrees_with_the_cpu_conversion() {
        use std::arch::x86_64::*;
        if !std::is_x86_feature_detected!("f16c") {
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2_000_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Raw bit patterns, biased towards the half range, then every half's value.
            let x = if i % 2 == 0 {
                f32::from_bits(state as u32)
            } else {
                f32::from_bits(0x3000_0000 + (state as u32 % 0x1800_0000))
            };
            // SAFETY: the CPU has F16C (checked above).
            let (cpu_h, cpu_x) = unsafe {
                let h = _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
                    _mm_set1_ps(x),
                )) as u16;
                (h, _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(h as i16))))
            };
            if x.is_nan() {
                assert!(to_f32(from_f32(x)).is_nan());
                continue;
            }
            assert_eq!(from_f32(x), cpu_h, "{x:e}");
            assert_eq!(to_f32(cpu_h).to_bits(), cpu_x.to_bits(), "{cpu_h:#06x}");
        }
    }
}
