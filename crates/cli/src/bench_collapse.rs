//! `everett bench --only collapse`: collapse (lookahead) decoding against plain greedy decoding
//! of the same prompt, 128 new tokens each (end-of-generation ignored, as a benchmark must), for
//! a code prompt, a structured-text prompt and a prose prompt. Runs alternate greedy, lookahead
//! and Jacobi so that the machine's noise hits them alike; each figure is a median. Every run's
//! tokens are checked to be greedy's. `busy` runs the code prompt beside 8 plain greedy
//! requests in one engine (drafts get only the step budget left over), once greedy and once
//! with lookahead: when it finishes, and when everything finishes.

use crate::bench::{median, round2};
use anyhow::{bail, Result};
use everett_engine::collapse::CollapseParams;
use everett_engine::engine::{Engine, EngineConfig, Event, Task};
use everett_engine::generate::Request;
use everett_engine::model::Model;
use everett_engine::oneshot::{collapse, generate_batch};
use everett_engine::sample::SamplingParams;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};
use std::time::Instant;

const NEW_TOKENS: usize = 128;
const RUNS: usize = 3;

const PROMPTS: [(&str, &str); 3] = [
    (
        "code",
        "import math\n\nclass Vector:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n    def __add__(self, other):\n        return Vector(self.x + other.x, self.y + other.y)\n\n    def __sub__(self, other):\n",
    ),
    (
        "structured",
        "[\n  {\"id\": 1, \"name\": \"Alice\", \"city\": \"Paris\", \"active\": true},\n  {\"id\": 2, \"name\": \"Bob\", \"city\": \"London\", \"active\": false},\n  {\"id\": 3,",
    ),
    (
        "prose",
        "The history of the printing press begins in the fifteenth century, when",
    ),
];

/// A greedy request for `NEW_TOKENS` tokens of `text` (end-of-generation ignored), collapsed
/// with `c` when given.
fn request(tok: &Tokenizer, text: &str, c: Option<CollapseParams>) -> Request {
    Request {
        ignore_eos: true,
        collapse: c,
        ..Request::new(
            tok.encode(text, true, false),
            SamplingParams::default(),
            NEW_TOKENS,
        )
    }
}

pub fn run(m: &mut Model, tok: &Tokenizer) -> Result<Value> {
    let mut out = Map::new();
    let lookahead = CollapseParams::default();
    let jacobi = CollapseParams::jacobi(lookahead.window);
    for (name, text) in PROMPTS {
        let req = |c: Option<CollapseParams>| request(tok, text, c);
        let (mut g, mut l, mut j) = (Vec::new(), Vec::new(), Vec::new());
        let (mut l_tpp, mut j_tpp) = (0.0, 0.0);
        for _ in 0..RUNS {
            let plain = req(None);
            let t = Instant::now();
            let greedy = generate_batch(m, tok, vec![plain])?.remove(0);
            g.push(t.elapsed().as_secs_f64());
            for (params, times, tpp) in [
                (lookahead, &mut l, &mut l_tpp),
                (jacobi, &mut j, &mut j_tpp),
            ] {
                let r = req(Some(params));
                let t = Instant::now();
                let run = collapse(m, tok, r, |_| {})?;
                times.push(t.elapsed().as_secs_f64());
                *tpp = run.tokens_per_pass();
                let same = run
                    .output
                    .tokens
                    .iter()
                    .map(|t| (t.id, t.logprob))
                    .eq(greedy.tokens.iter().map(|t| (t.id, t.logprob)));
                if !same {
                    bail!(
                        "collapse ({:?}) of the {name} prompt differs from greedy",
                        params.mode
                    );
                }
            }
        }
        let (g, l, j) = (median(g), median(l), median(j));
        out.insert(
            name.into(),
            json!({
                "greedy_tok_s": round2(NEW_TOKENS as f64 / g),
                "lookahead": {"speedup": round2(g / l), "tokens_per_pass": round2(l_tpp), "tok_s": round2(NEW_TOKENS as f64 / l)},
                "jacobi": {"speedup": round2(g / j), "tokens_per_pass": round2(j_tpp), "tok_s": round2(NEW_TOKENS as f64 / j)},
            }),
        );
    }
    out.insert("busy".into(), busy(m, tok)?);
    out.insert(
        "settings".into(),
        json!({"lookahead": lookahead, "jacobi": jacobi, "new_tokens": NEW_TOKENS, "runs": RUNS}),
    );
    Ok(Value::Object(out))
}

/// The code prompt collapsed (or not) among 8 greedy requests of the other prompts: seconds
/// until it finished, seconds until all finished, and its tokens per pass.
fn crowd(m: &mut Model, tok: &Tokenizer, c: Option<CollapseParams>) -> Result<(f64, f64, f64)> {
    let req = |text: &str, c: Option<CollapseParams>| request(tok, text, c);
    let mut e = Engine::new(m, tok, EngineConfig::for_seqs(16));
    let mut others = Vec::new();
    for i in 0..8 {
        others.push(e.submit(Task::Generate(req(PROMPTS[1 + i % 2].1, None)))?.1);
    }
    let (_, mut mine) = e.submit(Task::Generate(req(PROMPTS[0].1, c)))?;
    let t = Instant::now();
    let (mut mine_done, mut tokens, mut passes) = (None, 0, 0);
    while e.has_work() {
        e.step()?;
        while let Ok(ev) = mine.try_recv() {
            match ev {
                Event::Token { .. } => tokens += 1,
                Event::CollapsePass(_) => passes += 1,
                Event::Finished { .. } => mine_done = Some(t.elapsed().as_secs_f64()),
                Event::Error(err) => return Err(err.into()),
                _ => {}
            }
        }
    }
    let all = t.elapsed().as_secs_f64();
    let tpp = if passes > 0 {
        tokens as f64 / passes as f64
    } else {
        1.0
    };
    Ok((mine_done.unwrap_or(all), all, tpp))
}

fn busy(m: &mut Model, tok: &Tokenizer) -> Result<Value> {
    let (mut g_mine, mut g_all, mut l_mine, mut l_all) = (vec![], vec![], vec![], vec![]);
    let mut tpp = 0.0;
    for _ in 0..RUNS {
        let (a, b, _) = crowd(m, tok, None)?;
        g_mine.push(a);
        g_all.push(b);
        let (a, b, t) = crowd(m, tok, Some(CollapseParams::default()))?;
        l_mine.push(a);
        l_all.push(b);
        tpp = t;
    }
    let (gm, ga, lm, la) = (median(g_mine), median(g_all), median(l_mine), median(l_all));
    Ok(json!({
        "requests": 9,
        "greedy": {"code_request_s": round2(gm), "all_s": round2(ga)},
        "lookahead": {"code_request_s": round2(lm), "all_s": round2(la), "tokens_per_pass": round2(tpp)},
        "code_request_speedup": round2(gm / lm),
        "all_speedup": round2(ga / la),
    }))
}
