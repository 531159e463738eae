//! Collapse decoding is exactly greedy decoding: on tiny models of every architecture (Gemma's
//! tiny model has an 8-token sliding window, so taking guesses back crosses dropped blocks),
//! for Jacobi and lookahead with one or several chains, with stop tokens, stop strings and
//! end-of-generation tokens inside an accepted run, inside a busy engine with a tight budget and
//! preemption, and on the real model over prose, code, lists, JSON and other languages. Bad
//! parameters are refused.

use everett_engine::collapse::{CollapseParams, Mode};
use everett_engine::engine::{Engine, EngineConfig, Event, Task};
use everett_engine::error::Error;
use everett_engine::generate::{FinishReason, Request};
use everett_engine::gguf::GgufFile;
use everett_engine::kv::KvType;
use everett_engine::model::Model;
use everett_engine::oneshot::Collapsed;
use everett_engine::oneshot::{collapse, generate_batch};
use everett_engine::request::Output;
use everett_engine::sample::{Rng, SamplingParams};
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::testutil::{default_model, tiny_model, Tiny};
use everett_engine::tokenizer::Tokenizer;

fn load(bytes: Vec<u8>) -> (Model, Tokenizer) {
    let f = GgufFile::from_bytes(bytes).unwrap();
    (
        Model::from_gguf(&f, 2).unwrap(),
        Tokenizer::from_gguf(&f).unwrap(),
    )
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> Request {
    let sampling = SamplingParams {
        top_logprobs: 3,
        ..Default::default()
    };
    Request::new(prompt, sampling, max_tokens)
}

/// Token ids, logprob bits and alternatives (id, logprob bits) of each token.
type Bits = Vec<(u32, u32, Vec<(u32, u32)>)>;

fn bits(o: &Output) -> Bits {
    o.tokens
        .iter()
        .map(|t| {
            let top = t.top.iter().map(|a| (a.0, a.1.to_bits())).collect();
            (t.id, t.logprob.to_bits(), top)
        })
        .collect()
}

/// Runs `req` greedily and collapsed with `params`; asserts both agree bit for bit.
fn same_as_greedy(m: &mut Model, tok: &Tokenizer, req: &Request, p: CollapseParams) -> Collapsed {
    let greedy = generate_batch(m, tok, vec![req.clone()]).unwrap().remove(0);
    let mut creq = req.clone();
    creq.collapse = Some(p);
    let run = collapse(m, tok, creq, |_| {}).unwrap();
    assert_eq!(
        bits(&run.output),
        bits(&greedy),
        "{p:?} on {:?}",
        req.prompt_ids
    );
    assert_eq!(run.output.text, greedy.text);
    assert_eq!(run.output.finish_reason, greedy.finish_reason);
    let committed: usize = run.passes.iter().map(|x| x.accepted).sum();
    assert!(
        committed >= run.output.tokens.len(),
        "passes account for every token"
    );
    assert!(run
        .passes
        .iter()
        .all(|x| x.accepted >= 1 && x.accepted <= x.guessed + 1));
    run
}

fn below(rng: &mut Rng, n: u32) -> u32 {
    (rng.next_u64() % n as u64) as u32
}

/// Prompts that repeat themselves (lookahead finds guesses) and prompts that do not.
fn prompts(rng: &mut Rng, vocab: u32) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for len in [1usize, 3, 9, 17, 40] {
        out.push((0..len).map(|_| 3 + below(rng, vocab - 3)).collect());
    }
    let motif: Vec<u32> = (0..5).map(|_| 3 + below(rng, vocab - 3)).collect();
    out.push(motif.iter().cycle().take(33).copied().collect());
    out
}

fn settings() -> Vec<CollapseParams> {
    let d = CollapseParams::default();
    vec![
        d,
        CollapseParams::jacobi(4),
        CollapseParams::jacobi(1),
        CollapseParams {
            window: 16,
            ngram: 3,
            candidates: 3,
            ..d
        },
        CollapseParams {
            window: 2,
            ngram: 2,
            candidates: 2,
            ..d
        },
    ]
}

#[test]
fn every_architecture_collapses_to_exactly_greedy() {
    let mut rng = Rng::new(7);
    let quantized = [KvType::Q8_0, KvType::Q4_0].map(|k| (Tiny::gemma3(), k));
    for (t, kv) in [
        Tiny::gemma3(),
        Tiny::llama(),
        Tiny::gpt2(),
        Tiny::gemma3().float(),
    ]
    .map(|t| (t, KvType::F16))
    .into_iter()
    .chain(quantized)
    {
        let (mut m, tok) = load(tiny_model(&t, 42));
        // Quantized caches: the guesses' KV is taken back from inside quantized blocks.
        m.set_kv_type(kv).unwrap();
        let (mut tokens, mut passes, mut forks_won) = (0, 0, 0);
        for prompt in prompts(&mut rng, t.vocab as u32) {
            for p in settings() {
                let run = same_as_greedy(&mut m, &tok, &request(prompt.clone(), 48), p);
                tokens += run.output.tokens.len();
                passes += run.passes.len();
                forks_won += run.passes.iter().filter(|x| x.chains > 1).count();
            }
        }
        // Not vacuous: guesses were accepted, and several chains ran side by side.
        assert!(
            tokens > passes,
            "{}: {tokens} tokens in {passes} passes",
            t.arch
        );
        assert!(forks_won > 0, "{}: no pass verified several chains", t.arch);
    }
}

#[test]
fn stops_inside_an_accepted_run_end_it_exactly_where_greedy_stops() {
    let (mut m, tok) = load(tiny_model(&Tiny::gemma3(), 42));
    let mut rng = Rng::new(11);
    let mut inside = 0;
    for prompt in prompts(&mut rng, 96) {
        let base = request(prompt, 48);
        let run = same_as_greedy(&mut m, &tok, &base, CollapseParams::default());
        // A token that a pass committed after the pass's first token.
        let mut at = 0;
        let mut pick = None;
        for p in &run.passes {
            if p.accepted >= 2 && pick.is_none() {
                pick = Some(at + 1);
            }
            at += p.accepted;
        }
        let Some(i) = pick.filter(|&i| i < run.output.tokens.len()) else {
            continue;
        };
        inside += 1;
        let stop_id = run.output.tokens[i].id;
        let by_id = Request {
            stop_ids: vec![stop_id],
            ..base.clone()
        };
        let r = same_as_greedy(&mut m, &tok, &by_id, CollapseParams::default());
        assert!(r.output.tokens.len() <= i + 1);
        let text: String = run.output.tokens[..=i]
            .iter()
            .map(|t| t.text.as_str())
            .collect();
        if let Some(c) = text.chars().last() {
            let by_text = Request {
                stop_strings: vec![c.to_string()],
                ..base.clone()
            };
            same_as_greedy(&mut m, &tok, &by_text, CollapseParams::jacobi(6));
        }
        let with_min = Request {
            stop_ids: vec![stop_id],
            min_tokens: i + 2,
            ..base.clone()
        };
        same_as_greedy(&mut m, &tok, &with_min, CollapseParams::default());
    }
    assert!(
        inside >= 2,
        "only {inside} prompts had a multi-token pass to stop in"
    );
}

#[test]
fn a_collapse_request_in_a_busy_engine_with_preemption_gives_the_same_tokens() {
    let t = Tiny::gemma3();
    let (mut m, tok) = load(tiny_model(&t, 42));
    let mut rng = Rng::new(3);
    let motif: Vec<u32> = (0..4).map(|_| 3 + below(&mut rng, 90)).collect();
    let prompt: Vec<u32> = motif.iter().cycle().take(30).copied().collect();
    let mut req = request(prompt, 64);
    let alone = same_as_greedy(&mut m, &tok, &req, CollapseParams::default());
    req.collapse = Some(CollapseParams {
        candidates: 2,
        ..CollapseParams::default()
    });
    // A small cache and a small step budget: drafts get cut, requests get preempted.
    let cfg = EngineConfig {
        kv_tokens: 320,
        scheduler: SchedulerConfig {
            max_batch_tokens: 24,
            max_seqs: 16,
            ..SchedulerConfig::default()
        },
    };
    let mut e = Engine::new(&mut m, &tok, cfg);
    let mut others = Vec::new();
    for i in 0..10 {
        let p: Vec<u32> = (0..12 + i).map(|_| 3 + below(&mut rng, 90)).collect();
        others.push(e.submit(Task::Generate(request(p, 40))).unwrap().1);
    }
    let (_, mut events) = e.submit(Task::Generate(req)).unwrap();
    e.run_until_idle().unwrap();
    assert!(
        e.stats().scheduler.preemptions > 0,
        "the cache was meant to preempt"
    );
    let mut out = Output::new(alone.output.prompt_ids.clone());
    while let Ok(ev) = events.try_recv() {
        assert!(!matches!(ev, Event::Error(_)), "{ev:?}");
        out.absorb(&ev, 0);
    }
    assert_eq!(bits(&out), bits(&alone.output));
    assert_eq!(e.used_blocks(), 0, "every guess's block was given back");
}

#[test]
fn bad_collapse_parameters_and_sampling_are_refused_by_name() {
    let (mut m, tok) = load(tiny_model(&Tiny::llama(), 42));
    let d = CollapseParams::default();
    let with = |c: CollapseParams| Request {
        collapse: Some(c),
        logit_bias: Vec::new(),
        constraint: None,
        ..request(vec![5], 8)
    };
    let hot = SamplingParams {
        temperature: 0.7,
        ..Default::default()
    };
    let cases: Vec<(Request, &str)> = vec![
        (
            Request {
                sampling: hot,
                ..with(d)
            },
            "temperature",
        ),
        (Request { n: 2, ..with(d) }, "n"),
        (with(CollapseParams { window: 0, ..d }), "window"),
        (with(CollapseParams { window: 33, ..d }), "window"),
        (with(CollapseParams { ngram: 1, ..d }), "ngram"),
        (with(CollapseParams { candidates: 0, ..d }), "candidates"),
    ];
    for (req, field) in cases {
        match collapse(&mut m, &tok, req, |_| {}) {
            Err(Error::Param { name, .. }) => assert_eq!(name, field),
            other => panic!("{field}: expected a parameter error, got {other:?}"),
        }
    }
}

#[test]
fn the_real_model_collapses_to_exactly_greedy_on_many_kinds_of_text() {
    let Some(path) = default_model() else { return };
    let (mut m, tok) = load(std::fs::read(path).unwrap());
    let texts = [
        "The history of the printing press begins",
        "def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n",
        "Shopping list:\n1. Milk\n2. Eggs\n3.",
        "{\"name\": \"Ada\", \"age\": 36, \"languages\": [\"English\",",
        "La capitale de la France est Paris. La capitale de l'Italie est",
        "Der schnellste Weg nach Berlin ist",
        "東京は日本の首都です。大阪は",
        "<ul>\n  <li>one</li>\n  <li>two</li>\n",
        "SELECT name, email FROM users WHERE",
        "Once upon a time, in a small village by the sea,",
    ];
    let (mut tokens, mut passes) = (0, 0);
    for (i, text) in texts.iter().enumerate() {
        let mut req = request(tok.encode(text, true, false), 48);
        if i % 3 == 1 {
            req.stop_strings = vec!["\n\n".into()];
        }
        let p = if i % 2 == 0 {
            CollapseParams::default()
        } else {
            CollapseParams {
                mode: Mode::Jacobi,
                ..CollapseParams::default()
            }
        };
        let run = same_as_greedy(&mut m, &tok, &req, p);
        tokens += run.output.tokens.len();
        passes += run.passes.len();
    }
    assert!(tokens > passes, "{tokens} tokens in {passes} passes");
}

#[test]
fn end_of_generation_inside_an_accepted_run_ends_it_where_greedy_ends() {
    let (mut m, tok) = load(tiny_model(&Tiny::gemma3(), 42));
    let mut rng = Rng::new(5);
    let mut inside = 0;
    for prompt in prompts(&mut rng, 96) {
        let mut req = request(prompt, 48);
        req.ignore_eos = true;
        let run = same_as_greedy(&mut m, &tok, &req, CollapseParams::default());
        // A token that came as the second or later token of a pass becomes end-of-generation.
        let mut at = 0;
        let mut pick = None;
        for p in &run.passes {
            if p.accepted >= 2 && at + 1 < run.output.tokens.len() {
                pick.get_or_insert(run.output.tokens[at + 1].id);
            }
            at += p.accepted;
        }
        let Some(eos) = pick else { continue };
        inside += 1;
        let f = GgufFile::from_bytes(tiny_model(&Tiny::gemma3(), 42)).unwrap();
        let mut tok = Tokenizer::from_gguf(&f).unwrap();
        tok.eog.push(eos);
        req.ignore_eos = false;
        let r = same_as_greedy(&mut m, &tok, &req, CollapseParams::default());
        let last = r.output.tokens.last().expect("a token");
        assert_eq!(last.id, eos, "it ended on the end-of-generation token");
        assert_eq!(r.output.finish_reason, Some(FinishReason::Stop));
    }
    assert!(inside >= 2, "only {inside} prompts had a multi-token pass");
}

#[test]
fn penalties_see_the_guessed_history_exactly_as_greedy_sees_its_own() {
    let (mut m, tok) = load(tiny_model(&Tiny::llama(), 42));
    let mut rng = Rng::new(9);
    let mut changed = 0;
    for prompt in prompts(&mut rng, 96) {
        let plain = request(prompt, 40);
        let mut req = plain.clone();
        req.sampling.repeat_penalty = 1.3;
        req.sampling.presence_penalty = 0.5;
        req.sampling.frequency_penalty = 0.2;
        req.sampling.penalty_last_n = 16;
        let mut out = None;
        for p in settings() {
            out = Some(same_as_greedy(&mut m, &tok, &req, p).output);
        }
        let unpenalised = generate_batch(&mut m, &tok, vec![plain]).unwrap().remove(0);
        changed += usize::from(bits(&unpenalised) != bits(&out.expect("settings")));
    }
    assert!(changed > 0, "the penalties changed no output");
}

#[test]
fn a_collapse_request_reports_its_statistics_even_when_asked_for_none() {
    // `stats: false` lets plain greedy steps skip the logprob and entropy; a collapse request
    // shows each pass's entropies, so it computes them regardless (and stays greedy's double).
    let (mut m, tok) = load(tiny_model(&Tiny::gemma3(), 3));
    let req = request(vec![1, 2, 3, 1, 2, 3, 1, 2], 24);
    let mut quiet = req.clone();
    quiet.sampling.stats = false;
    quiet.sampling.top_logprobs = 0;
    quiet.collapse = Some(CollapseParams::default());
    let run = collapse(&mut m, &tok, quiet, |_| {}).unwrap();
    assert!(run
        .passes
        .iter()
        .all(|p| p.entropies.iter().all(|e| e.is_finite())));
    assert!(run.output.tokens.iter().all(|t| t.logprob.is_finite()));
    let greedy = generate_batch(&mut m, &tok, vec![req]).unwrap().remove(0);
    let ids = |o: &Output| {
        o.tokens
            .iter()
            .map(|t| (t.id, t.logprob.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&run.output), ids(&greedy));
}
