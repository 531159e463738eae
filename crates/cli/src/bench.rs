//! `everett bench`: prefill (pp128, pp512), single-sequence decode (tg128), total decode
//! throughput with 1–32 parallel sequences (128-token prompts, 64 new tokens each) and peak RSS.
//! Each figure is the median of several runs. Every run goes through the `Engine` (greedy
//! requests that ignore end-of-generation), with a step budget that prefills all prompts in one
//! forward pass. `explore` times a superposition search (width 16, branches 3, 32 steps) against
//! one greedy 32-token generation of the same prompt, and against the same search without KV
//! sharing. `collapse` is `bench_collapse` (lookahead and Jacobi decoding against greedy).
//! `engine` (only when asked for by name: it takes minutes) is the serving workload of
//! `bench_engine`; `depth` (by name too) is `bench_depth`, speed with a long context cached.

use crate::commands::load;
use crate::Common;
use anyhow::{bail, Result};
use everett_engine::engine::{Engine, EngineConfig, Event, Task};
use everett_engine::generate::Request;
use everett_engine::model::{Model, KV_BLOCK_SIZE};
use everett_engine::oneshot::{explore, generate_batch};
use everett_engine::sample::SamplingParams;
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::superposition::ExploreParams;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};
use std::time::Instant;

const PARTS: [&str; 10] = [
    "pp128",
    "pp512",
    "tg128",
    "parallel",
    "explore",
    "collapse",
    "constraint",
    "engine",
    "depth",
    "depth4k",
];
const EXPLORE_PROMPT: &str = "The meaning of life is";
const RUNS: usize = 3;

/// A deterministic synthetic prompt of ordinary tokens. Large vocabularies skip their first
/// 1000 ids (control and byte tokens); any vocabulary of more than 3 tokens works.
pub(crate) fn prompt(len: usize, salt: usize, vocab: usize) -> Vec<u32> {
    let first = if vocab > 4000 { 1000 } else { 3.min(vocab - 1) };
    let span = (vocab - first).max(1);
    (0..len)
        .map(|i| (first + (i * 7919 + salt * 104_729) % span) as u32)
        .collect()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An engine over `m` whose steps take `tokens` rows at once, for `seqs` sequences.
fn engine<'a>(m: &'a mut Model, tok: &'a Tokenizer, tokens: usize, seqs: usize) -> Bench<'a> {
    let cfg = EngineConfig {
        kv_tokens: tokens + seqs * 2 * KV_BLOCK_SIZE,
        scheduler: SchedulerConfig {
            max_batch_tokens: tokens,
            max_seqs: seqs,
            max_logit_rows: seqs,
            ..SchedulerConfig::default()
        },
    };
    Engine::new(m, tok, cfg)
}

type Bench<'a> = Engine<&'a mut Model, &'a Tokenizer>;

/// A greedy request for `new` tokens, ignoring end-of-generation (as a benchmark must).
fn greedy(prompt_ids: Vec<u32>, new: usize) -> Task {
    Task::Generate(Request {
        ignore_eos: true,
        min_tokens: 0,
        collapse: None,
        logit_bias: Vec::new(),
        constraint: None,
        ..Request::new(prompt_ids, SamplingParams::default(), new)
    })
}

/// Token events waiting in `streams`, all taken.
pub(crate) fn tokens_received(streams: &mut [everett_engine::engine::Events]) -> usize {
    streams
        .iter_mut()
        .map(|s| {
            std::iter::from_fn(|| s.try_recv().ok())
                .filter(|e| matches!(e, Event::Token { .. }))
                .count()
        })
        .sum()
}

/// Prefill of `n` tokens in one step: tokens per second.
fn prefill(m: &mut Model, tok: &Tokenizer, n: usize) -> Result<f64> {
    let vocab = m.config.vocab;
    let mut e = engine(m, tok, n, 1);
    let _events = e.submit(greedy(prompt(n, 1, vocab), 1))?;
    let t = Instant::now();
    let r = e.step()?;
    let dt = t.elapsed().as_secs_f64();
    if r.tokens != n {
        bail!("the prefill ran {} of {n} tokens in its step", r.tokens);
    }
    Ok(n as f64 / dt)
}

/// `seqs` sequences with `prompt_len`-token prompts each decode `new` tokens together: total
/// generated tokens per second over the decode steps (the prefill step excluded).
fn decode(
    m: &mut Model,
    tok: &Tokenizer,
    seqs: usize,
    prompt_len: usize,
    new: usize,
) -> Result<f64> {
    let vocab = m.config.vocab;
    let mut e = engine(m, tok, seqs * (prompt_len + new + 1), seqs);
    let mut streams = Vec::new();
    for i in 0..seqs {
        streams.push(
            e.submit(greedy(prompt(prompt_len, i + 2, vocab), new + 1))?
                .1,
        );
    }
    e.step()?; // every prompt, and each sequence's first token
    let t = Instant::now();
    for _ in 0..new {
        e.step()?;
    }
    let dt = t.elapsed().as_secs_f64();
    let produced = tokens_received(&mut streams);
    if produced != seqs * (new + 1) || e.has_work() {
        bail!(
            "decode produced {produced} tokens, expected {}",
            seqs * (new + 1)
        );
    }
    Ok((seqs * new) as f64 / dt)
}

pub(crate) fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn run(common: &Common, only: Option<&str>) -> Result<()> {
    if let Some(o) = only {
        if !PARTS.contains(&o) {
            bail!("--only must be one of {}", PARTS.join(", "));
        }
    }
    let (mut m, tok) = load(common)?;
    let want = |p: &str| only.is_none_or(|o| o == p);
    let mut out = Map::new();
    let mut report = |name: &str, v: Value| {
        if !common.json {
            eprintln!("{name:<10} {v}");
        }
        out.insert(name.to_string(), v);
    };
    decode(&mut m, &tok, 1, 8, 8)?; // warm-up: page in weights, grow buffers
    for (name, n) in [("pp128", 128), ("pp512", 512)] {
        if want(name) {
            let runs = (0..RUNS)
                .map(|_| prefill(&mut m, &tok, n))
                .collect::<Result<Vec<_>>>()?;
            report(name, json!(round(median(runs))));
        }
    }
    if want("tg128") {
        let runs = (0..RUNS)
            .map(|_| decode(&mut m, &tok, 1, 8, 128))
            .collect::<Result<Vec<_>>>()?;
        report("tg128", json!(round(median(runs))));
    }
    if want("parallel") {
        let mut par = Map::new();
        for n in [1, 2, 4, 8, 16, 32] {
            let runs = (0..RUNS)
                .map(|_| decode(&mut m, &tok, n, 128, 64))
                .collect::<Result<Vec<_>>>()?;
            let v = round(median(runs));
            if !common.json {
                eprintln!("parallel {n:>2} {v}");
            }
            par.insert(n.to_string(), json!(v));
        }
        out.insert("parallel".into(), Value::Object(par));
    }
    if want("explore") {
        let v = explore_vs_generate(&mut m, &tok)?;
        if !common.json {
            eprintln!("explore    {v}");
        }
        out.insert("explore".into(), v);
    }
    if want("collapse") {
        let v = crate::bench_collapse::run(&mut m, &tok)?;
        if !common.json {
            eprintln!("collapse   {v}");
        }
        out.insert("collapse".into(), v);
    }
    if want("constraint") {
        let again = std::sync::Arc::new(Tokenizer::from_gguf(&crate::commands::open(common)?)?);
        let v = crate::bench_constraint::run(&mut m, &tok, again)?;
        if !common.json {
            eprintln!("constraint {v}");
        }
        out.insert("constraint".into(), v);
    }
    // Long contexts take minutes: only on request.
    if only == Some("depth") {
        out.insert(
            "depth".into(),
            crate::bench_depth::run(&mut m, &tok, usize::MAX)?,
        );
    }
    if only == Some("depth4k") {
        out.insert("depth".into(), crate::bench_depth::run(&mut m, &tok, 4096)?);
    }
    // The serving workload takes minutes: only on request.
    if only == Some("engine") {
        out.insert("engine".into(), crate::bench_engine::run(&mut m, &tok)?);
    }
    out.insert("peak_rss_mb".into(), json!(round(peak_rss_mb())));
    println!("{}", Value::Object(out));
    Ok(())
}

/// Wall time of `f`, in seconds.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed().as_secs_f64(), v))
}

/// The explorer's cost relative to plain generation and to recomputing without sharing.
fn explore_vs_generate(m: &mut Model, tok: &Tokenizer) -> Result<Value> {
    let ids = tok.encode(EXPLORE_PROMPT, true, false);
    let p = ExploreParams {
        branches: 3,
        width: 16,
        steps: 32,
        ..Default::default()
    };
    let greedy = || Request::new(ids.clone(), SamplingParams::default(), 32);
    let (mut gen, mut shared, mut unshared) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..RUNS {
        gen.push(timed(|| Ok(generate_batch(m, tok, vec![greedy()])?))?.0);
        let (t, e) = timed(|| Ok(explore(m, tok, EXPLORE_PROMPT, &ids, &p)?))?;
        shared.push(t);
        last = Some(e);
    }
    // Recomputing every path each step is slow; one run is enough to see the difference.
    let no_share = ExploreParams {
        no_share: true,
        ..p.clone()
    };
    unshared.push(timed(|| Ok(explore(m, tok, EXPLORE_PROMPT, &ids, &no_share)?))?.0);
    let e = last.expect("RUNS > 0");
    let (g, s, u) = (median(gen), median(shared), median(unshared));
    Ok(json!({
        "ratio_vs_generate": round2(s / g),
        "ratio_no_share": round2(u / s),
        "forward_passes": e.stats.forward_passes,
        "kv_blocks_used": e.stats.kv_blocks_used,
        "kv_blocks_unshared": e.stats.kv_blocks_unshared,
        "generate_ms": round(g * 1e3),
        "explore_ms": round(s * 1e3),
        "no_share_ms": round(u * 1e3),
    }))
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
