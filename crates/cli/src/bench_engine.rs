//! `everett bench --only engine`: a serving workload through the engine. 64 requests (fixed
//! seed) with prompts of 16–1024 tokens, a quarter of them opening with one of four shared
//! 128-token "system prompts", and 16–256 output tokens each (end-of-generation ignored), run
//! four ways: arriving all at once or as a Poisson stream, under continuous batching or as static
//! batches. Continuous: one engine, at most `SEQS` running sequences, a 512-token step budget and
//! a KV cache of `KV_TOKENS` tokens (small enough to preempt). Static (what everett did before
//! the engine existed): up to `SEQS` arrived requests form a batch whose prompts are prefilled in
//! one forward pass and which runs until its longest member is done before the next batch
//! starts; its KV cache is sized to the batch, so it never preempts. Reported per run: output
//! tok/s over the makespan, TTFT and time per output token (p50/p95), preemptions, prefix-hit
//! rate and peak KV blocks.

use anyhow::{bail, Result};
use everett_engine::engine::{Engine, EngineConfig, Event, Events, Task};
use everett_engine::generate::Request;
use everett_engine::model::{Model, KV_BLOCK_SIZE};
use everett_engine::sample::{Rng, SamplingParams};
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const REQUESTS: usize = 64;
const SEQS: usize = 32;
const KV_TOKENS: usize = 16_384;
/// Mean arrivals per second of the Poisson stream.
const RATE: f64 = 1.0;
const SEED: u64 = 2026;

struct Work {
    prompt: Vec<u32>,
    new: usize,
    /// Seconds after the start.
    arrival: f64,
}

/// What happened to one request.
#[derive(Default, Clone, Copy)]
struct Timing {
    arrival: f64,
    first: Option<f64>,
    last: f64,
    tokens: usize,
}

fn workload(vocab: usize, poisson: bool) -> Vec<Work> {
    let mut rng = Rng::new(SEED);
    let uniform =
        |rng: &mut Rng, lo: usize, hi: usize| lo + (rng.next_f64() * (hi - lo + 1) as f64) as usize;
    let systems: Vec<Vec<u32>> = (0..4)
        .map(|s| super::bench::prompt(128, 100 + s, vocab))
        .collect();
    let mut t = 0.0;
    let mut out = Vec::new();
    for i in 0..REQUESTS {
        let len = uniform(&mut rng, 16, 1024);
        let new = uniform(&mut rng, 16, 256);
        let mut prompt = super::bench::prompt(len, 1000 + i, vocab);
        if i % 4 == 0 && len > 128 {
            prompt[..128].copy_from_slice(&systems[uniform(&mut rng, 0, 3)]);
        }
        if poisson {
            // Exponential gaps: -ln(U) / rate.
            t += -(1.0 - rng.next_f64()).ln() / RATE;
        }
        out.push(Work {
            prompt,
            new,
            arrival: t,
        });
    }
    out
}

fn task(w: &Work) -> Task {
    Task::Generate(Request {
        ignore_eos: true,
        min_tokens: 0,
        ..Request::new(w.prompt.clone(), SamplingParams::default(), w.new)
    })
}

/// One untouched record per request, knowing only its arrival.
fn fresh_timings(work: &[Work]) -> Vec<Timing> {
    work.iter()
        .map(|w| Timing {
            arrival: w.arrival,
            ..Default::default()
        })
        .collect()
}

/// Records the events that arrived on each stream.
fn drain(streams: &mut [(usize, Events)], timings: &mut [Timing], now: f64) -> Result<()> {
    for (i, s) in streams.iter_mut() {
        while let Ok(e) = s.try_recv() {
            match e {
                Event::Token { .. } => {
                    let t = &mut timings[*i];
                    t.first.get_or_insert(now);
                    t.last = now;
                    t.tokens += 1;
                }
                Event::Error(e) => bail!("request {i} failed: {e}"),
                _ => {}
            }
        }
    }
    Ok(())
}

fn wait_until(start: Instant, t: f64) {
    let now = start.elapsed().as_secs_f64();
    if t > now {
        std::thread::sleep(Duration::from_secs_f64(t - now));
    }
}

/// Continuous batching: requests join the one engine as they arrive.
fn continuous(m: &mut Model, tok: &Tokenizer, work: &[Work]) -> Result<Value> {
    let cfg = EngineConfig {
        kv_tokens: KV_TOKENS,
        scheduler: SchedulerConfig {
            max_seqs: SEQS,
            ..SchedulerConfig::default()
        },
    };
    let mut e = Engine::new(m, tok, cfg);
    let mut timings = fresh_timings(work);
    let mut streams = Vec::new();
    let start = Instant::now();
    let mut next = 0;
    while next < work.len() || e.has_work() {
        let now = start.elapsed().as_secs_f64();
        while next < work.len() && work[next].arrival <= now {
            streams.push((next, e.submit(task(&work[next]))?.1));
            next += 1;
        }
        if !e.has_work() {
            wait_until(start, work[next].arrival);
            continue;
        }
        e.step()?;
        drain(&mut streams, &mut timings, start.elapsed().as_secs_f64())?;
    }
    let s = e.stats();
    let prefix = s.prefix;
    Ok(report(
        work,
        &timings,
        json!({
            "preemptions": s.scheduler.preemptions,
            "prefix_hit_rate": round3(prefix.hit_tokens as f64 / prefix.queried_tokens.max(1) as f64),
            "peak_kv_blocks": s.peak_used_blocks,
            "kv_blocks": s.capacity_blocks,
            "steps": s.scheduler.steps,
        }),
    ))
}

/// Static batches: a batch runs to completion before the next one is formed.
fn static_batches(m: &mut Model, tok: &Tokenizer, work: &[Work]) -> Result<Value> {
    let mut timings = fresh_timings(work);
    let start = Instant::now();
    let (mut next, mut peak, mut batches) = (0, 0, 0);
    while next < work.len() {
        wait_until(start, work[next].arrival);
        let now = start.elapsed().as_secs_f64();
        let end = (next..work.len())
            .take(SEQS)
            .take_while(|&i| work[i].arrival <= now)
            .last()
            .map_or(next + 1, |i| i + 1);
        let batch = &work[next..end];
        let tokens: usize = batch
            .iter()
            .map(|w| w.prompt.len() + w.new + KV_BLOCK_SIZE)
            .sum();
        let cfg = EngineConfig {
            kv_tokens: tokens,
            scheduler: SchedulerConfig {
                max_batch_tokens: tokens,
                max_seqs: SEQS,
                max_logit_rows: SEQS,
                ..SchedulerConfig::default()
            },
        };
        let mut e = Engine::new(&mut *m, tok, cfg);
        let mut streams = Vec::new();
        for (i, w) in batch.iter().enumerate() {
            streams.push((next + i, e.submit(task(w))?.1));
        }
        while e.has_work() {
            e.step()?;
            drain(&mut streams, &mut timings, start.elapsed().as_secs_f64())?;
        }
        peak = peak.max(e.stats().peak_used_blocks);
        batches += 1;
        next = end;
    }
    Ok(report(
        work,
        &timings,
        json!({"batches": batches, "peak_kv_blocks": peak, "preemptions": 0}),
    ))
}

fn percentiles(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({"p50": round3(at(0.5)), "p95": round3(at(0.95))})
}

fn report(work: &[Work], t: &[Timing], extra: Value) -> Value {
    let tokens: usize = t.iter().map(|t| t.tokens).sum();
    let expected: usize = work.iter().map(|w| w.new).sum();
    let first_arrival = t.iter().map(|t| t.arrival).fold(f64::INFINITY, f64::min);
    let end = t.iter().map(|t| t.last).fold(0.0, f64::max);
    let ttft: Vec<f64> = t
        .iter()
        .map(|t| t.first.unwrap_or(t.last) - t.arrival)
        .collect();
    let tpot: Vec<f64> = t
        .iter()
        .filter(|t| t.tokens > 1)
        .map(|t| (t.last - t.first.unwrap_or(t.last)) / (t.tokens - 1) as f64)
        .collect();
    let mut v = json!({
        "total_s": round3(end - first_arrival),
        "output_tokens": tokens,
        "complete": tokens == expected,
        "output_tok_s": round3(tokens as f64 / (end - first_arrival)),
        "ttft_s": percentiles(ttft),
        "tpot_s": percentiles(tpot),
    });
    if let (Some(o), Value::Object(x)) = (v.as_object_mut(), extra) {
        o.extend(x);
    }
    v
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub fn run(m: &mut Model, tok: &Tokenizer) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (name, poisson) in [("all_at_once", false), ("poisson", true)] {
        let work = workload(m.config.vocab, poisson);
        let c = continuous(m, tok, &work)?;
        eprintln!("engine {name} continuous {c}");
        let s = static_batches(m, tok, &work)?;
        eprintln!("engine {name} static     {s}");
        out.insert(name.into(), json!({"continuous": c, "static": s}));
    }
    out.insert(
        "setup".into(),
        json!({"requests": REQUESTS, "max_seqs": SEQS, "kv_tokens": KV_TOKENS, "poisson_rate_per_s": RATE, "seed": SEED}),
    );
    Ok(Value::Object(out))
}
