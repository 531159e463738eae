//! `everett bench --only depth`: speed with a long context already in the KV cache, as
//! `llama-bench -d D` measures it: the prefill of 512 more tokens (`pp512`) and the decode of
//! 32 tokens (`tg32`) after `D` tokens of context, for D = 0, 4k, 8k, 16k and 32k (those that fit
//! the model's context). One request whose prompt is `D + 512` tokens is prefilled in steps of
//! 512; the last of them is the timed pp512, then 32 decode steps. Medians of 3 runs up to 8k,
//! one run beyond (a 32k prefill takes a minute here). `--only depth4k` stops at 4k.

use super::bench::{median, prompt, round2};
use anyhow::{bail, Result};
use everett_engine::engine::{Engine, EngineConfig, Task};
use everett_engine::generate::Request;
use everett_engine::model::{Model, KV_BLOCK_SIZE};
use everett_engine::sample::SamplingParams;
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};
use std::time::Instant;

const CHUNK: usize = 512;
const NEW: usize = 32;

/// (pp512 tok/s, tg32 tok/s) after `depth` tokens.
fn at_depth(m: &mut Model, tok: &Tokenizer, depth: usize) -> Result<(f64, f64)> {
    let vocab = m.config.vocab;
    let total = depth + CHUNK;
    let cfg = EngineConfig {
        kv_tokens: total + NEW + 2 * KV_BLOCK_SIZE,
        scheduler: SchedulerConfig {
            max_batch_tokens: CHUNK,
            max_seqs: 1,
            max_logit_rows: 1,
            ..SchedulerConfig::default()
        },
    };
    let mut e = Engine::new(&mut *m, tok, cfg);
    let req = Request {
        ignore_eos: true,
        ..Request::new(prompt(total, 5, vocab), SamplingParams::default(), NEW + 1)
    };
    let _events = e.submit(Task::Generate(req))?;
    let mut done = 0;
    let mut pp = 0.0;
    while done < total {
        let t = Instant::now();
        let r = e.step()?;
        let dt = t.elapsed().as_secs_f64();
        done += r.tokens;
        if done == total {
            if r.tokens != CHUNK {
                bail!("the last prefill step ran {} tokens, not {CHUNK}", r.tokens);
            }
            pp = CHUNK as f64 / dt;
        }
    }
    let t = Instant::now();
    for _ in 0..NEW {
        e.step()?;
    }
    let tg = NEW as f64 / t.elapsed().as_secs_f64();
    Ok((pp, tg))
}

/// Every depth up to `max_depth` (`--only depth4k`: 0 and 4k, a KV type's comparison).
pub fn run(m: &mut Model, tok: &Tokenizer, max_depth: usize) -> Result<Value> {
    let context = m.config.context_length;
    let mut out = Map::new();
    for depth in [0, 4096, 8192, 16384, 32768]
        .into_iter()
        .filter(|&d| d <= max_depth)
    {
        // The largest depth that fits the window with its 512 + 32 tokens.
        let depth = depth.min(context.saturating_sub(CHUNK + NEW + 1) / CHUNK * CHUNK);
        if out.contains_key(&depth.to_string()) {
            continue;
        }
        let runs = if depth <= 8192 { 3 } else { 1 };
        let (mut pps, mut tgs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (pp, tg) = at_depth(m, tok, depth)?;
            pps.push(pp);
            tgs.push(tg);
        }
        let v = json!({"pp512": round2(median(pps)), "tg32": round2(median(tgs))});
        eprintln!("depth {depth:>6} {v}");
        out.insert(depth.to_string(), v);
    }
    Ok(Value::Object(out))
}
