//! Logits processing and sampling as pure functions of (logits, params, history, rng):
//! penalties, temperature, top-k, top-p, min-p, greedy; plus the statistics every step reports
//! (the chosen token's logprob, the top-n alternatives and the entropy of the model's raw
//! distribution). Stop conditions are the caller's (see `generate`).

pub mod dist;
pub mod rng;

use crate::error::{check_range, Error, Result};
pub use dist::argmax;
pub use rng::Rng;

/// Sampling parameters, validated by `validate`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off.
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// How many previous tokens (prompt included) the penalties look at.
    pub penalty_last_n: usize,
    pub seed: u64,
    /// Alternatives reported per step.
    pub top_logprobs: usize,
    /// Whether every step reports the chosen token's logprob and the raw distribution's
    /// entropy. Off (a server request that asked for no logprobs), a greedy step without
    /// alternatives skips that pass over the vocabulary and reports NaN for both. A policy
    /// that reads them (collapse decoding) turns it on.
    pub stats: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
            top_logprobs: 0,
            stats: true,
        }
    }
}

/// Largest accepted `top_logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 100;

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        // Range tests are false for NaN, and every upper bound rules out infinity.
        let (t, top_p, min_p) = (self.temperature, self.top_p, self.min_p);
        check_range("temperature", t, (0.0..=100.0).contains(&t), "[0, 100]")?;
        check_range("top_p", top_p, top_p > 0.0 && top_p <= 1.0, "(0, 1]")?;
        check_range("min_p", min_p, (0.0..=1.0).contains(&min_p), "[0, 1]")?;
        let rp = self.repeat_penalty;
        check_range("repeat_penalty", rp, rp > 0.0 && rp <= 100.0, "(0, 100]")?;
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            check_range(name, v, (-100.0..=100.0).contains(&v), "[-100, 100]")?;
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(Error::param(
                "top_logprobs",
                format!("{} is above {MAX_TOP_LOGPROBS}", self.top_logprobs),
            ));
        }
        Ok(())
    }
}

/// What one sampling step chose and saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub id: u32,
    /// log p(id) under the model's raw distribution.
    pub logprob: f32,
    /// Entropy (nats) of the raw next-token distribution.
    pub entropy: f32,
    /// The most likely tokens of the raw distribution, best first: (id, logprob).
    pub top: Vec<(u32, f32)>,
}

/// Log-sum-exp and entropy of softmax(logits), in one stable pass pair.
pub fn log_norm_and_entropy(logits: &[f32]) -> (f32, f32) {
    let s = dist::stats(logits, 1.0);
    (s.log_norm as f32, s.entropy as f32)
}

/// The `n` highest logits as (id, logit), best first; ties go to the lower id.
pub fn top_n(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    dist::top_k(logits, n, f32::NEG_INFINITY)
}

/// Applies repetition / presence / frequency penalties for the tokens in `history`.
pub fn apply_penalties(logits: &mut [f32], p: &SamplingParams, history: &[u32]) {
    if p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0 {
        return;
    }
    let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
    let mut counts: Vec<(u32, u32)> = Vec::with_capacity(recent.len());
    for &t in recent {
        match counts.iter_mut().find(|c| c.0 == t) {
            Some(c) => c.1 += 1,
            None => counts.push((t, 1)),
        }
    }
    for (t, n) in counts {
        let Some(l) = logits.get_mut(t as usize) else {
            continue;
        };
        *l = if *l > 0.0 {
            *l / p.repeat_penalty
        } else {
            *l * p.repeat_penalty
        };
        *l -= p.presence_penalty + p.frequency_penalty * n as f32;
    }
}

/// Candidates kept after temperature, top-k, top-p and min-p, as (id, probability) summing to 1,
/// best first. `logits` must already carry penalties.
pub fn candidates(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f32)> {
    let t = p.temperature.max(1e-6);
    // Widen the sorted prefix until it covers top-p (exact, without sorting the whole vocab).
    let mut n = if p.top_k > 0 { p.top_k } else { 256 }.min(logits.len());
    let lse = dist::stats(logits, t).log_norm as f32;
    loop {
        let top = top_n(logits, n);
        let probs: Vec<(u32, f32)> = top.iter().map(|&(i, l)| (i, (l / t - lse).exp())).collect();
        let mass: f32 = probs.iter().map(|c| c.1).sum();
        if p.top_k > 0 || mass >= p.top_p || n == logits.len() {
            return truncate(probs, p);
        }
        n = (n * 4).min(logits.len());
    }
}

fn truncate(mut probs: Vec<(u32, f32)>, p: &SamplingParams) -> Vec<(u32, f32)> {
    let total: f32 = probs.iter().map(|c| c.1).sum();
    probs.iter_mut().for_each(|c| c.1 /= total);
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let keep = probs.iter().position(|c| {
            cum += c.1;
            cum >= p.top_p
        });
        probs.truncate(keep.map_or(probs.len(), |k| k + 1));
    }
    if p.min_p > 0.0 {
        let floor = probs[0].1 * p.min_p;
        probs.retain(|c| c.1 >= floor);
    }
    let total: f32 = probs.iter().map(|c| c.1).sum();
    probs.iter_mut().for_each(|c| c.1 /= total);
    probs
}

/// Draws from `softmax(logits / T)` over the whole row, leaving out tokens below `min_p` times
/// the most likely one, by walking the cumulative distribution in id order: nothing is ranked,
/// two passes over the row.
fn draw_full(logits: &[f32], p: &SamplingParams, u: f64) -> u32 {
    let t = p.temperature.max(1e-6);
    let max = dist::max_of(logits);
    // p_i / p_max = exp((l_i - max) / T) >= min_p  <=>  l_i >= max + T ln(min_p).
    let cut = if p.min_p > 0.0 {
        max + t * p.min_p.ln()
    } else {
        f32::NEG_INFINITY
    };
    let weight = |l: f32| if l >= cut { ((l - max) / t).exp() } else { 0.0 };
    let total: f64 = logits.iter().map(|&l| weight(l) as f64).sum();
    let target = u * total;
    let (mut cum, mut last) = (0f64, None);
    for (i, &l) in logits.iter().enumerate() {
        let w = weight(l) as f64;
        if w > 0.0 {
            cum += w;
            last = Some(i as u32);
            if cum > target {
                break;
            }
        }
    }
    last.unwrap_or_else(|| argmax(logits))
}

/// Makes a row that holds NaN or infinite logits usable: NaN and −∞ become −1e30, +∞ becomes
/// 1e30 (finite, so no `∞ − ∞` appears later, and far enough out to keep their meaning).
/// A broken model file can produce such rows; they must not panic the sampler.
pub fn sanitize(logits: &mut [f32]) {
    for v in logits.iter_mut() {
        if v.is_nan() || *v < -1e30 {
            *v = -1e30;
        } else if *v > 1e30 {
            *v = 1e30;
        }
    }
}

/// `log_norm_and_entropy`, first sanitizing a row whose statistics are not finite.
pub fn checked_norm_and_entropy(logits: &mut [f32]) -> (f32, f32) {
    let (lse, entropy) = log_norm_and_entropy(logits);
    if lse.is_finite() && entropy.is_finite() {
        return (lse, entropy);
    }
    sanitize(logits);
    log_norm_and_entropy(logits)
}

/// One sampling step over a row of logits (modified in place by penalties, and sanitized when
/// it holds NaN or infinities).
pub fn sample(logits: &mut [f32], p: &SamplingParams, history: &[u32], rng: &mut Rng) -> Choice {
    match sample_with(logits, p, history, rng, None) {
        Ok(c) => c,
        Err(e) => unreachable!("only a constraint fails a draw: {e}"),
    }
}

/// What a constraint offers the sampler.
pub trait Allowed {
    /// Whether `id` may be drawn; `false` when unsure (the mask then decides).
    fn allows(&mut self, id: u32) -> bool;
    /// Sets every forbidden logit of the row to −∞.
    fn mask(&mut self, logits: &mut [f32]) -> Result<()>;
}

/// As `sample`, drawing only tokens `allowed` allows. The logprobs and entropy stay the model's
/// (taken before the constraint). A greedy row skips the mask when its best token is allowed
/// (then it is also the best allowed one); a sampled row is masked first, since one draw over
/// the whole vocabulary costs more than a mask.
pub fn sample_with(
    logits: &mut [f32],
    p: &SamplingParams,
    history: &[u32],
    rng: &mut Rng,
    mut allowed: Option<&mut dyn Allowed>,
) -> Result<Choice> {
    let (lse, entropy) = if p.stats || p.temperature > 0.0 || p.top_logprobs > 0 {
        checked_norm_and_entropy(logits)
    } else {
        (f32::NAN, f32::NAN)
    };
    let top: Vec<(u32, f32)> = top_n(logits, p.top_logprobs)
        .into_iter()
        .map(|(i, l)| (i, l - lse))
        .collect();
    let recent = &history[history.len().saturating_sub(p.penalty_last_n)..];
    let originals: Vec<(u32, f32)> = recent
        .iter()
        .filter_map(|&t| logits.get(t as usize).map(|&l| (t, l)))
        .collect();
    apply_penalties(logits, p, history);
    // A mask only sets forbidden logits to −∞: an allowed token keeps its raw logit below.
    let id = if p.temperature == 0.0 {
        let best = argmax(logits);
        match allowed.as_mut() {
            Some(a) => {
                if a.allows(best) {
                    best
                } else {
                    a.mask(logits)?;
                    argmax(logits)
                }
            }
            None => best,
        }
    } else {
        if let Some(a) = allowed.as_mut() {
            a.mask(logits)?;
        }
        if p.top_k == 0 && p.top_p >= 1.0 {
            draw_full(logits, p, rng.next_f64())
        } else {
            let cands = candidates(logits, p);
            let u = rng.next_f64() as f32;
            let mut cum = 0.0;
            let hit = cands.iter().find(|c| {
                cum += c.1;
                u < cum
            });
            hit.or(cands.last()).expect("at least one candidate").0
        }
    };
    let raw = originals
        .iter()
        .find(|o| o.0 == id)
        .map_or(logits[id as usize], |o| o.1);
    Ok(Choice {
        id,
        logprob: raw - lse,
        entropy,
        top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_with_nan_or_infinities_sample_without_panicking() {
        let rows: [&[f32]; 4] = [
            &[f32::NAN, 1.0, 2.0, f32::NAN],
            &[f32::INFINITY, 1.0, f32::INFINITY, 0.0],
            &[f32::NEG_INFINITY; 4],
            &[f32::NAN; 4],
        ];
        for row in rows {
            for (t, k, top_p, min_p) in [(0.0, 0, 1.0, 0.0), (0.8, 2, 0.9, 0.1), (1.0, 0, 1.0, 0.5)]
            {
                let p = SamplingParams {
                    temperature: t,
                    top_k: k,
                    top_p,
                    min_p,
                    top_logprobs: 2,
                    ..Default::default()
                };
                let c = sample(&mut row.to_vec(), &p, &[1], &mut Rng::new(1));
                assert!((c.id as usize) < row.len());
                assert!(
                    c.logprob.is_finite() && c.entropy.is_finite(),
                    "{row:?}: {c:?}"
                );
            }
        }
        // The finite entries still decide: NaN never wins over a real logit.
        let c = sample(
            &mut [f32::NAN, 1.0, 2.0, f32::NAN],
            &params(0.0, 0.0),
            &[],
            &mut Rng::new(1),
        );
        assert_eq!(c.id, 2);
    }

    #[test]
    fn greedy_steps_without_stats_pick_the_same_token_and_report_nan() {
        let mut rng = Rng::new(3);
        let mut rows: Vec<Vec<f32>> = (0..8)
            .map(|_| {
                (0..1000)
                    .map(|_| rng.next_f64() as f32 * 20.0 - 10.0)
                    .collect()
            })
            .collect();
        rows.push(vec![f32::NAN, 1.0, 2.0, f32::NAN]);
        rows.push(vec![f32::NEG_INFINITY, 3.0, f32::NAN, 3.0]);
        let on = params(0.0, 0.0);
        let off = SamplingParams {
            stats: false,
            ..on.clone()
        };
        for row in rows {
            let a = sample(&mut row.clone(), &on, &[0], &mut Rng::new(1));
            let b = sample(&mut row.clone(), &off, &[0], &mut Rng::new(1));
            assert_eq!(a.id, b.id, "{row:?}");
            assert!(a.logprob.is_finite() && a.entropy.is_finite());
            assert!(b.logprob.is_nan() && b.entropy.is_nan());
        }
        // Alternatives or a temperature need the normalizer, so they keep the statistics.
        for p in [
            SamplingParams {
                top_logprobs: 1,
                ..off.clone()
            },
            SamplingParams {
                temperature: 0.7,
                ..off.clone()
            },
        ] {
            let c = sample(&mut [0.0, 1.0, 2.0], &p, &[], &mut Rng::new(1));
            assert!(c.logprob.is_finite() && c.entropy.is_finite(), "{p:?}");
        }
    }

    fn params(temperature: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            min_p,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn full_vocabulary_draws_follow_the_tempered_distribution() {
        let logits = [0.0f32, 1.0, 2.0, -3.0, 0.5];
        let (t, n) = (0.7f32, 40_000);
        let mut rng = Rng::new(9);
        let mut hits = [0usize; 5];
        for _ in 0..n {
            hits[sample(&mut logits.clone(), &params(t, 0.0), &[], &mut rng).id as usize] += 1;
        }
        let z: f32 = logits.iter().map(|l| (l / t).exp()).sum();
        for (i, &h) in hits.iter().enumerate() {
            let p = (logits[i] / t).exp() / z;
            assert!(
                (h as f32 / n as f32 - p).abs() < 0.01,
                "token {i}: {h} vs p {p}"
            );
        }
        // min_p 0.2 at T 0.7 keeps tokens with p >= 0.2 p_max: ids 1 (0.24) and 2 only.
        for _ in 0..2000 {
            let id = sample(&mut logits.clone(), &params(t, 0.2), &[], &mut rng).id;
            assert!(id == 1 || id == 2, "{id}");
        }
    }

    #[test]
    fn a_real_sized_vocabulary_samples_quickly_and_reproducibly() {
        // 262 144 logits, as Gemma has: ranking them per token once took seconds.
        let row: Vec<f32> = (0..262_144u32)
            .map(|i| ((i * 2_654_435_761u32) >> 20) as f32 / 512.0)
            .collect();
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| sample(&mut row.clone(), &params(0.8, 0.0), &[], &mut rng).id)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }
}
