//! The rounding primitives every quantizer shares, bit for bit as ggml computes them.

use half::f16;

/// Round to nearest, ties to even, by adding 1.5 · 2^23 (ggml's `nearest_int`; |x| < 2^22).
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// The f16 bits of `x`, rounded to nearest even.
pub fn f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// `x` rounded to f16 and back, as ggml reads a scale it has just stored.
pub fn via_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}
