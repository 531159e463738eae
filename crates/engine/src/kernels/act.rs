//! Quantizes activations once per step to signed 8-bit with one f32 scale per 32 values, plus
//! the integer sums per 16 and per 32 that the affine weight formats need. The buffers are kept
//! and reused across steps: after warm-up nothing here allocates.

/// Activation rows `[rows, k]` as int8 codes with per-32 scales.
#[derive(Default)]
pub struct QuantActs {
    pub rows: usize,
    pub k: usize,
    /// `[rows, k]`.
    pub codes: Vec<i8>,
    /// `[rows, k/32]`.
    pub scales: Vec<f32>,
    /// `[rows, k/16]`: sum of the codes of each 16-value sub-block.
    pub sums16: Vec<i32>,
    /// `[rows, k/32]`.
    pub sums32: Vec<i32>,
}

impl QuantActs {
    /// Quantizes `x` (`[rows, k]`, k a multiple of 32). Each row's result depends on that row only.
    pub fn quantize(&mut self, x: &[f32], rows: usize, k: usize) {
        debug_assert!(k.is_multiple_of(32) && x.len() >= rows * k);
        self.rows = rows;
        self.k = k;
        self.codes.resize(rows * k, 0);
        self.scales.resize(rows * k / 32, 0.0);
        self.sums16.resize(rows * k / 16, 0);
        self.sums32.resize(rows * k / 32, 0);
        for (b, (src, dst)) in x[..rows * k]
            .chunks_exact(32)
            .zip(self.codes.chunks_exact_mut(32))
            .enumerate()
        {
            let mut lanes = [0f32; 8];
            for c in src.chunks_exact(8) {
                for j in 0..8 {
                    let a = c[j].abs();
                    lanes[j] = if a > lanes[j] { a } else { lanes[j] };
                }
            }
            let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            // Adding and subtracting 1.5·2^23 rounds to nearest (ties to even), branch-free.
            const ROUND: f32 = 12_582_912.0;
            for (o, v) in dst.iter_mut().zip(src) {
                *o = ((v * inv + ROUND) - ROUND) as i32 as i8;
            }
            let mut sum = [0i32; 2];
            for (i, &q) in dst.iter().enumerate() {
                sum[i / 16] += q as i32;
            }
            self.scales[b] = d;
            self.sums16[2 * b] = sum[0];
            self.sums16[2 * b + 1] = sum[1];
            self.sums32[b] = sum[0] + sum[1];
        }
    }
}
