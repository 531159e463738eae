//! `everett bench --only constraint`: what structured outputs cost. The compiler's one-time
//! build over the vocabulary; a JSON schema's compile time; the per-token mask cost (mean, p99)
//! along a valid document's tokens, and the cost of the check that lets a step skip the mask
//! (and how often it can tell: not while the grammar forces bytes no token spelled yet);
//! and 32 sequences decoding together (sampled, temperature 1) with none, half or all of them
//! constrained by the schema (with a long `bio` last, so that no constrained sequence finishes
//! inside the measured steps and every configuration runs the same batch): generated tokens
//! per second over `STEPS` decode steps; and collapse (lookahead) decoding of a greedy request
//! under the schema (its roles bounded), with and without the tokens the grammar forces as guesses: tokens per
//! forward pass (the same tokens either way).

use super::bench::{median, round2, tokens_received};
use anyhow::{bail, Result};
use everett_engine::collapse::CollapseParams;
use everett_engine::constraint::{Compiler, Constraint};
use everett_engine::engine::{Engine, EngineConfig, Task};
use everett_engine::generate::Request;
use everett_engine::model::Model;
use everett_engine::oneshot::collapse as collapse_run;
use everett_engine::sample::SamplingParams;
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

const SEQS: usize = 32;
const STEPS: usize = 40;

pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "email": {"type": "string", "pattern": "^[a-z]+@[a-z]+\\.[a-z]{2,3}$"},
            "roles": {"type": "array", "items": {"enum": ["admin", "editor", "viewer"]}},
            "address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city"], "additionalProperties": false}
        },
        "required": ["name", "age", "roles", "address"],
        "additionalProperties": false
    })
}

/// A document that satisfies `schema()`, written as the constraint writes JSON (compact).
const DOCUMENT: &str = r#"{"name":"Ada Lovelace","age":36,"email":"ada@engine.uk","roles":["admin","viewer"],"address":{"street":"12 St James's Square","city":"London","zip":"SW1Y 4JH"}}"#;

pub fn run(m: &mut Model, tok: &Tokenizer, tok_arc: Arc<Tokenizer>) -> Result<Value> {
    let t = Instant::now();
    let compiler = Compiler::new(tok_arc)?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let grammar = compiler.compile(&Constraint::JsonSchema(schema()))?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    // Along the document: a mask at every position, then the token.
    let ids = tok.encode(DOCUMENT, false, false);
    let (mut masks, mut checks, mut conclusive) = (Vec::new(), Vec::new(), 0);
    let mut g = grammar.clone();
    for &id in &ids {
        let t = Instant::now();
        let mask = g.mask()?;
        masks.push(t.elapsed().as_secs_f64() * 1e6);
        if !mask.allows(id) {
            bail!("the benchmark document leaves the schema at token {id}");
        }
        let t = Instant::now();
        // `false` is allowed (unsure: forced bytes pending), then the step takes the mask.
        if g.allows(id) {
            conclusive += 1;
        }
        checks.push(t.elapsed().as_secs_f64() * 1e6);
        g.consume(id)?;
    }
    let mean = masks.iter().sum::<f64>() / masks.len() as f64;
    let mut sorted = masks.clone();
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    let mut long = schema();
    long["properties"]["bio"] = json!({"type": "string", "minLength": 400});
    long["required"]
        .as_array_mut()
        .expect("a list")
        .push(json!("bio"));
    let long = compiler.compile(&Constraint::JsonSchema(long))?;
    let mut tput = serde_json::Map::new();
    for (name, constrained) in [("none", 0), ("half", SEQS / 2), ("all", SEQS)] {
        let runs = (0..3)
            .map(|_| decode(m, tok, &long, constrained))
            .collect::<Result<Vec<_>>>()?;
        tput.insert(name.into(), json!(round2(median(runs))));
    }
    // Bounded, so that greedy decoding finishes the document instead of repeating a role.
    let mut bounded = schema();
    bounded["properties"]["roles"]["maxItems"] = json!(3);
    let bounded = compiler.compile(&Constraint::JsonSchema(bounded))?;
    let mut collapse = serde_json::Map::new();
    for (name, fast_forward) in [("fast_forward", true), ("without", false)] {
        let mut req = Request::new(
            tok.encode("Write a user record as JSON:", true, false),
            SamplingParams::default(),
            160,
        );
        req.constraint = Some(bounded.clone());
        req.collapse = Some(CollapseParams {
            fast_forward,
            ..CollapseParams::default()
        });
        let run = collapse_run(m, tok, req, |_| {})?;
        collapse.insert(
            name.into(),
            json!({
                "tokens": run.output.tokens.len(),
                "passes": run.passes.len(),
                "tokens_per_pass": round2(run.tokens_per_pass()),
                "ms": round2(run.wall_ms),
            }),
        );
    }
    Ok(json!({
        "compiler_build_ms": round2(build_ms),
        "schema_compile_ms": round2(compile_ms),
        "document_tokens": ids.len(),
        "mask_us_mean": round2(mean),
        "mask_us_p99": round2(p99),
        "allowed_check_us_mean": round2(checks.iter().sum::<f64>() / checks.len() as f64),
        "allowed_check_conclusive": format!("{conclusive}/{}", ids.len()),
        "decode_32_tok_s": Value::Object(tput),
        "collapse_greedy": Value::Object(collapse),
    }))
}

/// `SEQS` sequences decode together at temperature 1, the first `constrained` of them under
/// `grammar`: generated tokens per second over `STEPS` decode steps (an error if any sequence
/// finished within them).
fn decode(
    m: &mut Model,
    tok: &Tokenizer,
    grammar: &everett_engine::constraint::Grammar,
    constrained: usize,
) -> Result<f64> {
    let cfg = EngineConfig {
        kv_tokens: SEQS * (64 + STEPS + 32),
        scheduler: SchedulerConfig {
            max_batch_tokens: 2048,
            max_seqs: SEQS,
            max_logit_rows: SEQS,
            ..SchedulerConfig::default()
        },
    };
    let mut e = Engine::new(&mut *m, tok, cfg);
    let prompt = tok.encode("Write a user record as JSON:", true, false);
    let mut streams = Vec::new();
    for i in 0..SEQS {
        let sampling = SamplingParams {
            temperature: 1.0,
            seed: i as u64,
            ..SamplingParams::default()
        };
        let mut req = Request::new(prompt.clone(), sampling, STEPS + 2);
        req.ignore_eos = i >= constrained;
        req.constraint = (i < constrained).then(|| grammar.clone());
        streams.push(e.submit(Task::Generate(req))?.1);
    }
    e.step()?;
    let first = tokens_received(&mut streams);
    let t = Instant::now();
    for _ in 0..STEPS {
        e.step()?;
    }
    let dt = t.elapsed().as_secs_f64();
    let produced = tokens_received(&mut streams);
    if first != SEQS || produced != SEQS * STEPS {
        bail!("{produced} tokens in {STEPS} steps of {SEQS} sequences: some finished early");
    }
    Ok(produced as f64 / dt)
}
