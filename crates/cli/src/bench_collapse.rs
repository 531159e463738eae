//! `everett bench --only collapse`: collapse (lookahead) decoding against plain greedy decoding
//! of the same prompt, 128 new tokens each (end-of-generation ignored, as a benchmark must), for
//! a code prompt, a structured-text prompt and a prose prompt. Runs alternate greedy, lookahead
//! and Jacobi so that the machine's noise hits them alike; each figure is a median. Every run's
//! tokens are checked to be greedy's.

use anyhow::{bail, Result};
use everett_engine::collapse::{collapse, CollapseParams};
use everett_engine::generate::{generate_batch, Request};
use everett_engine::model::Model;
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn run(m: &mut Model, tok: &Tokenizer) -> Result<Value> {
    let mut out = Map::new();
    let lookahead = CollapseParams::default();
    let jacobi = CollapseParams::jacobi(lookahead.window);
    for (name, text) in PROMPTS {
        let ids = tok.encode(text, true, false);
        let req = |c: Option<CollapseParams>| Request {
            ignore_eos: true,
            collapse: c,
            ..Request::new(ids.clone(), SamplingParams::default(), NEW_TOKENS)
        };
        let (mut g, mut l, mut j) = (Vec::new(), Vec::new(), Vec::new());
        let (mut l_tpp, mut j_tpp) = (0.0, 0.0);
        for _ in 0..RUNS {
            let t = Instant::now();
            let greedy = generate_batch(m, tok, vec![req(None)])?.remove(0);
            g.push(t.elapsed().as_secs_f64());
            for (params, times, tpp) in [
                (lookahead, &mut l, &mut l_tpp),
                (jacobi, &mut j, &mut j_tpp),
            ] {
                let t = Instant::now();
                let run = collapse(m, tok, req(Some(params)), |_| {})?;
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
    out.insert(
        "settings".into(),
        json!({"lookahead": lookahead, "jacobi": jacobi, "new_tokens": NEW_TOKENS, "runs": RUNS}),
    );
    Ok(Value::Object(out))
}
