//! Small per-row operations: RMSNorm, LayerNorm, rotary embeddings, GELU/SiLU, dot and axpy.
//! Each works on one row at a time so that results never depend on batch composition.

/// `x = x / rms(x) * w`, in place; `x.len() == w.len()`.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for (v, g) in x.iter_mut().zip(w) {
        *v = *v * inv * g;
    }
}

/// `x = (x - mean) / std * w + b`, in place.
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), bb) in x.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * inv * g + bb;
    }
}

/// `e^x` to about 2e-7 relative for x in [-87, 88] (clamped outside), branch-free so that loops
/// over it vectorize: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial,
/// 2^n by building the float's exponent bits.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer in any SIMD width.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// GELU, tanh approximation (as in GPT-2 and Gemma), with tanh(y) = 1 − 2 / (1 + e^{2y}) over
/// `exp_fast` so that loops over it vectorize.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x);
    let tanh = 1.0 - 2.0 / (1.0 + exp_fast(2.0 * y));
    0.5 * x * (1.0 + tanh)
}

#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_fast(-x))
}

/// The MLP's element-wise step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu(gate) * up` (Gemma).
    GeGlu,
    /// `silu(gate) * up` (Llama).
    SwiGlu,
    /// `gelu(up)` with no gate (GPT-2).
    Gelu,
}

/// Applies `e` over whole rows at once (vectorized where the CPU allows).
pub fn activate(e: Activation, up: &mut [f32], gate: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { activate_fma(e, up, gate) };
    }
    activate_generic(e, up, gate)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn activate_fma(e: Activation, up: &mut [f32], gate: &[f32]) {
    activate_generic(e, up, gate)
}

#[inline(always)]
fn activate_generic(e: Activation, up: &mut [f32], gate: &[f32]) {
    match e {
        Activation::GeGlu => up.iter_mut().zip(gate).for_each(|(u, g)| *u *= gelu(*g)),
        Activation::SwiGlu => up.iter_mut().zip(gate).for_each(|(u, g)| *u *= silu(*g)),
        Activation::Gelu => up.iter_mut().for_each(|u| *u = gelu(*u)),
    }
}

/// Rotary embedding tables: `inv_freq[i] = freq_scale · base^(-2i/dim) / factor[i]` for one
/// head dimension (factors: Llama 3's `rope_freqs`, Phi-3's long/short factors), and the
/// magnitude `mscale` applied to sine and cosine (Phi-3 LongRoPE's attention factor).
pub struct Rope {
    inv_freq: Vec<f32>,
    mscale: f32,
    /// NeoX style rotates the two halves of the head; GPT-J style rotates adjacent pairs.
    neox: bool,
}

impl Rope {
    pub fn new(dim: usize, base: f32, neox: bool) -> Self {
        Self::scaled(dim, base, neox, 1.0, None, 1.0, None)
    }

    /// `factors` has `dim / 2` entries when given. With `yarn_context` (the original context of
    /// a YaRN model), each pair blends the scaled and the unscaled frequency by YaRN's ramp
    /// between the dimensions that turn 32 and 1 times within that context (llama.cpp's
    /// defaults), and `mscale` grows by 1 + 0.1·ln(1/freq_scale).
    pub fn scaled(
        dim: usize,
        base: f32,
        neox: bool,
        freq_scale: f32,
        factors: Option<&[f32]>,
        mscale: f32,
        yarn_context: Option<usize>,
    ) -> Self {
        let n = dim as f32;
        // The pair index where a frequency turns `beta` times within the original context.
        let corr = |ctx: usize, beta: f32| {
            n * (ctx as f32 / (beta * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln())
        };
        let ramp = yarn_context.map(|ctx| {
            let low = corr(ctx, 32.0).floor().max(0.0);
            let high = corr(ctx, 1.0).ceil().min(n - 1.0);
            (low, high)
        });
        let inv_freq = (0..dim / 2)
            .map(|i| {
                let extrap = base.powf(-((2 * i) as f32) / n) / factors.map_or(1.0, |ff| ff[i]);
                match ramp {
                    None => freq_scale * extrap,
                    Some((low, high)) => {
                        let y = (i as f32 - low) / (high - low).max(0.001);
                        let mix = 1.0 - y.clamp(0.0, 1.0);
                        extrap * (freq_scale * (1.0 - mix) + mix)
                    }
                }
            })
            .collect();
        let mscale = match yarn_context {
            Some(_) => mscale * (1.0 + 0.1 * (1.0 / freq_scale).ln()),
            None => mscale,
        };
        Self {
            inv_freq,
            mscale,
            neox,
        }
    }

    /// Rotates every head of `x` (`[heads, dim]`) for position `pos`. Each angle's sine and
    /// cosine are computed once and used for all heads.
    pub fn apply(&self, x: &mut [f32], dim: usize, pos: usize) {
        self.rotate(x, dim, pos as f32, self.mscale);
    }

    /// Turns every head of `x`, rotated for some position p by `apply`, to position p - `back`:
    /// the rotation by the opposite angle, without scaling again (StreamingLLM's re-rotation of
    /// cached keys).
    pub fn rotate_back(&self, x: &mut [f32], dim: usize, back: usize) {
        self.rotate(x, dim, -(back as f32), 1.0);
    }

    fn rotate(&self, x: &mut [f32], dim: usize, pos: f32, scale: f32) {
        let half = dim / 2;
        for (i, f) in self.inv_freq.iter().enumerate() {
            let theta = pos * f;
            let (sin, cos) = theta.sin_cos();
            let (sin, cos) = (sin * scale, cos * scale);
            let (a, b) = if self.neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            for head in x.chunks_exact_mut(dim) {
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// Whether the AVX2+FMA compiled variants may run on this CPU.
pub(crate) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Dot product with 8 independent accumulators (fixed order, so the result does not depend on
/// which code path runs it). Uses AVX2+FMA when present: without the target feature `mul_add`
/// would be a slow library call.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { dot_fma(a, b) };
    }
    dot_generic(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(&b[a.len() - a.len() % 8..])
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has avx2 and fma (checked above).
        return unsafe { axpy_fma(y, a, x) };
    }
    axpy_generic(y, a, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_fma(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_generic(y, a, x)
}

#[inline(always)]
fn axpy_generic(y: &mut [f32], a: f32, x: &[f32]) {
    for (yy, xx) in y.iter_mut().zip(x) {
        *yy = a.mul_add(*xx, *yy);
    }
}
