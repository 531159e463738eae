//! Reading a whole next-token distribution fast: the log-normaliser of `softmax(logits / T)`,
//! its entropy and varentropy (vectorized, f64-accurate sums), the top-k, and k draws without
//! replacement. Used by every sampling step and by the explorer for each leaf. It never
//! materialises the vocabulary-sized probability row and does not allocate per element.

use crate::kernels::ops::{exp_fast, has_fma};
use crate::sample::rng::Rng;

/// Summary of `p = softmax(logits / temperature)` over the whole vocabulary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistStats {
    /// `log Σ exp(l / T)`, so `log p(i) = l_i / T - log_norm`.
    pub log_norm: f64,
    /// `H = -Σ p log p` (nats).
    pub entropy: f64,
    /// `Σ p (log p + H)^2`: how spread the surprisal is around its mean.
    pub varentropy: f64,
    /// The largest scaled logit `max l / T`.
    pub max_scaled: f32,
}

/// Lanes of the element-wise loops below: wide enough for two AVX-512 registers of f32.
const LANES: usize = 16;

/// Stats of the tempered distribution, in two passes over the row.
pub fn stats(logits: &[f32], temperature: f32) -> DistStats {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { stats_avx2(logits, temperature) };
    }
    stats_body(logits, temperature)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn stats_avx2(logits: &[f32], temperature: f32) -> DistStats {
    stats_body(logits, temperature)
}

/// Index of the largest logit (lowest id on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { argmax_avx2(logits) };
    }
    argmax_body(logits)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn argmax_avx2(logits: &[f32]) -> u32 {
    argmax_body(logits)
}

/// Two passes that vectorize: the maximum, then the first block of lanes that holds it and
/// the first position inside that block.
#[inline(always)]
fn argmax_body(logits: &[f32]) -> u32 {
    let max = max_of(logits);
    let block = logits
        .chunks(LANES)
        .position(|c| c.iter().fold(false, |hit, &l| hit | (l == max)))
        .unwrap_or(0);
    let at = logits[block * LANES..]
        .iter()
        .position(|&l| l == max)
        .unwrap_or(0);
    (block * LANES + at) as u32
}

/// Lane-wise maximum (vectorizes, unlike a fold with `f32::max`).
#[inline(always)]
pub(crate) fn max_of(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut it = xs.chunks_exact(LANES);
    for v in &mut it {
        for j in 0..LANES {
            m[j] = if v[j] > m[j] { v[j] } else { m[j] };
        }
    }
    let rest = it
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    m.iter().fold(rest, |a, &b| a.max(b))
}

#[inline(always)]
fn stats_body(logits: &[f32], temperature: f32) -> DistStats {
    let inv_t = 1.0 / temperature;
    let max_scaled = max_of(logits) * inv_t;
    // Sums of e, e·x, e·x² with x = l/T − max ≤ 0: f32 lanes, folded into f64 every chunk so
    // that the vocabulary-long sum keeps f64 accuracy while the inner loop vectorizes.
    let (mut z, mut zx, mut zxx) = (0f64, 0f64, 0f64);
    for chunk in logits.chunks(1024) {
        let (mut a, mut b, mut c) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        let mut it = chunk.chunks_exact(LANES);
        for v in &mut it {
            for j in 0..LANES {
                let x = v[j] * inv_t - max_scaled;
                let e = exp_fast(x);
                a[j] += e;
                b[j] += e * x;
                c[j] += e * x * x;
            }
        }
        for &l in it.remainder() {
            let x = l * inv_t - max_scaled;
            let e = exp_fast(x);
            a[0] += e;
            b[0] += e * x;
            c[0] += e * x * x;
        }
        z += a.iter().map(|&v| v as f64).sum::<f64>();
        zx += b.iter().map(|&v| v as f64).sum::<f64>();
        zxx += c.iter().map(|&v| v as f64).sum::<f64>();
    }
    let mean_x = zx / z;
    let log_z = z.ln();
    // log p = x − log z, so H = log z − E[x] and Var[log p] = Var[x].
    DistStats {
        log_norm: max_scaled as f64 + log_z,
        entropy: (log_z - mean_x).max(0.0),
        varentropy: (zxx / z - mean_x * mean_x).max(0.0),
        max_scaled,
    }
}

/// Above this many, `top_k` selects and sorts instead of keeping a sorted list.
const SORT_ABOVE: usize = 256;

/// The `k` best (id, logit) of the row whose logit is at least `floor`, best first; ties go to
/// the lower id. One pass that skips every 64-wide chunk whose maximum cannot enter the list.
pub fn top_k(logits: &[f32], k: usize, floor: f32) -> Vec<(u32, f32)> {
    if k > SORT_ABOVE {
        // Inserting into a long sorted list is quadratic: select the k best, then sort those.
        let mut all: Vec<(u32, f32)> = (0u32..)
            .zip(logits.iter().copied())
            .filter(|&(_, l)| l >= floor)
            .collect();
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if all.len() > k {
            all.select_nth_unstable_by(k - 1, order);
            all.truncate(k);
        }
        all.sort_unstable_by(order);
        return all;
    }
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    const CHUNK: usize = 64;
    for (c, chunk) in logits.chunks(CHUNK).enumerate() {
        let bar = if best.len() == k {
            best[k - 1].1
        } else {
            floor
        };
        if max_of(chunk) < bar {
            continue;
        }
        for (j, &l) in chunk.iter().enumerate() {
            if l < floor || (best.len() == k && l <= best[k - 1].1) {
                continue;
            }
            // Strictly greater moves ahead, so an equal logit keeps the earlier (lower) id first.
            let at = best.partition_point(|b| b.1 >= l);
            best.insert(at, ((c * CHUNK + j) as u32, l));
            best.truncate(k);
        }
    }
    best
}

/// `k` distinct ids drawn without replacement with probability ∝ `softmax(logits / T)` among
/// logits at least `floor` (Gumbel-top-k: perturb each scaled logit by Gumbel noise, keep the
/// `k` largest), returned with their unperturbed logits in draw order.
pub fn sample_k(
    logits: &[f32],
    k: usize,
    floor: f32,
    temperature: f32,
    rng: &mut Rng,
) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32, f64)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return Vec::new();
    }
    let inv_t = 1.0 / temperature as f64;
    for (i, &l) in logits.iter().enumerate() {
        if l < floor {
            continue;
        }
        let u = rng.next_f64().max(f64::MIN_POSITIVE);
        let key = l as f64 * inv_t - (-u.ln()).ln();
        if best.len() == k && key <= best[k - 1].2 {
            continue;
        }
        let at = best.partition_point(|b| b.2 >= key);
        best.insert(at, (i as u32, l, key));
        best.truncate(k);
    }
    best.into_iter().map(|(i, l, _)| (i, l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(logits: &[f32], t: f32) -> (f64, f64, f64) {
        let xs: Vec<f64> = logits.iter().map(|&l| l as f64 / t as f64).collect();
        let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = xs.iter().map(|x| (x - m).exp()).sum();
        let lse = m + z.ln();
        let lp: Vec<f64> = xs.iter().map(|x| x - lse).collect();
        let h: f64 = -lp.iter().map(|l| l.exp() * l).sum::<f64>();
        let v: f64 = lp.iter().map(|l| l.exp() * (l + h).powi(2)).sum();
        (lse, h, v)
    }

    #[test]
    fn argmax_is_the_first_largest_logit() {
        let mut rng = Rng::new(3);
        for len in [1usize, 15, 16, 17, 33, 1000] {
            // Few distinct values, so ties inside and across blocks of lanes are common.
            let logits: Vec<f32> = (0..len)
                .map(|_| (rng.next_f64() * 4.0).floor() as f32)
                .collect();
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let first = logits.iter().position(|&l| l == max).unwrap() as u32;
            assert_eq!(argmax(&logits), first, "{logits:?}");
            assert_eq!(argmax_body(&logits), first);
        }
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn stats_match_a_float64_reference() {
        let mut rng = Rng::new(1);
        let logits: Vec<f32> = (0..5000)
            .map(|_| (rng.next_f64() * 20.0 - 10.0) as f32)
            .collect();
        for t in [0.5f32, 1.0, 2.0] {
            let s = stats(&logits, t);
            let (lse, h, v) = exact(&logits, t);
            assert!(
                (s.log_norm - lse).abs() < 1e-5,
                "{t}: {} vs {lse}",
                s.log_norm
            );
            assert!((s.entropy - h).abs() < 1e-4, "{t}: {} vs {h}", s.entropy);
            assert!(
                (s.varentropy - v).abs() < 1e-3,
                "{t}: {} vs {v}",
                s.varentropy
            );
        }
        let one_hot = [0.0f32, 100.0, 0.0];
        let s = stats(&one_hot, 1.0);
        assert!(s.entropy < 1e-6 && s.varentropy < 1e-3);
    }

    #[test]
    fn top_k_is_sorted_breaks_ties_by_id_and_honours_the_floor() {
        let l = [1.0f32, 3.0, 3.0, 2.0, 5.0, -1.0];
        assert_eq!(
            top_k(&l, 3, f32::NEG_INFINITY),
            vec![(4, 5.0), (1, 3.0), (2, 3.0)]
        );
        assert_eq!(top_k(&l, 10, 2.5), vec![(4, 5.0), (1, 3.0), (2, 3.0)]);
        assert!(top_k(&l, 0, 0.0).is_empty());
    }

    #[test]
    fn long_lists_rank_like_short_ones() {
        // Few distinct values, so ties are everywhere; both code paths against a full sort.
        let l: Vec<f32> = (0..5000u32)
            .map(|i| ((i * 2_654_435_761u32) >> 24) as f32)
            .collect();
        for k in [SORT_ABOVE, SORT_ABOVE + 1, 4999] {
            let mut want: Vec<(u32, f32)> = (0u32..)
                .zip(l.iter().copied())
                .filter(|x| x.1 >= 3.0)
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(k);
            assert_eq!(top_k(&l, k, 3.0), want, "k {k}");
        }
    }

    #[test]
    fn sample_k_draws_distinct_ids_reproducibly_and_follows_probability() {
        let l = [0.0f32, 3.0, 0.0, 0.0];
        let a = sample_k(&l, 2, f32::NEG_INFINITY, 1.0, &mut Rng::new(5));
        let b = sample_k(&l, 2, f32::NEG_INFINITY, 1.0, &mut Rng::new(5));
        assert_eq!(a, b);
        assert_ne!(a[0].0, a[1].0);
        let firsts = (0..2000)
            .filter(|&s| sample_k(&l, 1, f32::NEG_INFINITY, 1.0, &mut Rng::new(s))[0].0 == 1)
            .count();
        // p(1) = e^3 / (e^3 + 3) ≈ 0.87
        assert!((1600..1880).contains(&firsts), "{firsts}");
        assert_eq!(sample_k(&l, 4, 1.0, 1.0, &mut Rng::new(0)), vec![(1, 3.0)]);
    }
}
