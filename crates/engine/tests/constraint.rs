//! Constrained decoding on the real model (262 144-token vocabulary): every sample of a JSON
//! schema, a choice list or a regex matches it, at temperature 1 over many seeds and with
//! `n > 1`; a constraint that does not compile is refused with llguidance's message; and a
//! constrained request leaves the requests beside it bit-identical (batch invariance); collapse
//! decoding under a constraint is constrained greedy decoding, in fewer passes.

use everett_engine::collapse::{CollapseParams, Source};
use everett_engine::constraint::{Compiler, Constraint, Grammar};
use everett_engine::engine::ExploreRequest;
use everett_engine::error::Error;
use everett_engine::generate::{FinishReason, Request};
use everett_engine::gguf::GgufFile;
use everett_engine::model::Model;
use everett_engine::oneshot::{collapse, explore_request, generate_batch};
use everett_engine::request::Output;
use everett_engine::sample::SamplingParams;
use everett_engine::superposition::{ExploreParams, FinishReason as PathEnd};
use everett_engine::testutil::default_model;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::sync::Arc;

struct Real {
    model: Model,
    tok: Arc<Tokenizer>,
    compiler: Compiler,
}

fn load(path: &std::path::Path) -> Real {
    let f = GgufFile::open(path).unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(&f).unwrap());
    Real {
        model: Model::from_gguf(&f, 2).unwrap(),
        compiler: Compiler::new(tok.clone()).unwrap(),
        tok,
    }
}

fn request(r: &Real, prompt: &str, g: Option<Grammar>, temp: f32, seed: u64, n: usize) -> Request {
    let sampling = SamplingParams {
        temperature: temp,
        seed,
        ..SamplingParams::default()
    };
    let mut req = Request::new(r.tok.encode(prompt, true, false), sampling, 120);
    req.n = n;
    req.constraint = g;
    req
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["admin", "user", "guest"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"],
                "additionalProperties": false
            }
        },
        "required": ["name", "age", "role", "address"],
        "additionalProperties": false
    })
}

/// `person_schema`, compiled.
fn person(r: &Real) -> Grammar {
    r.compiler
        .compile(&Constraint::JsonSchema(person_schema()))
        .unwrap()
}

/// Checks `v` against `person_schema` by hand.
fn check_person(v: &Value) {
    let o = v.as_object().expect("an object");
    for k in o.keys() {
        assert!(
            ["name", "age", "role", "tags", "address"].contains(&k.as_str()),
            "{v}"
        );
    }
    assert!(
        o["name"].as_str().is_some_and(|s| s.chars().count() <= 20),
        "{v}"
    );
    let age = o["age"].as_i64().expect("integer age");
    assert!((0..=120).contains(&age), "{v}");
    assert!(
        ["admin", "user", "guest"].contains(&o["role"].as_str().unwrap()),
        "{v}"
    );
    if let Some(tags) = o.get("tags") {
        let tags = tags.as_array().expect("array");
        assert!(tags.len() <= 3 && tags.iter().all(|t| t.is_string()), "{v}");
    }
    let addr = o["address"].as_object().expect("address object");
    assert_eq!(addr.len(), 1, "{v}");
    assert!(addr["city"].is_string(), "{v}");
}

/// A token's id, logprob bits and top logprobs' bits.
type Bits = (u32, u32, Vec<(u32, u32)>);

fn finished(outs: &[Output]) {
    for o in outs {
        assert_eq!(o.finish_reason, Some(FinishReason::Stop), "{:?}", o.text);
    }
}

#[test]
fn json_schema_samples_always_parse_and_validate() {
    let Some(path) = default_model() else { return };
    let mut r = load(&path);
    let g = person(&r);
    let prompt = "Describe a fictional person as JSON:";
    let reqs: Vec<Request> = (0..6)
        .map(|seed| request(&r, prompt, Some(g.clone()), 1.0, seed, 2))
        .collect();
    let outs = generate_batch(&mut r.model, &r.tok, reqs).unwrap();
    assert_eq!(outs.len(), 12);
    finished(&outs);
    for o in &outs {
        let v: Value = serde_json::from_str(&o.text).unwrap_or_else(|e| panic!("{e}: {}", o.text));
        check_person(&v);
    }
    // Greedy too (the mask is skipped whenever the model's own choice is allowed).
    let greedy = vec![request(&r, prompt, Some(g), 0.0, 0, 1)];
    let outs = generate_batch(&mut r.model, &r.tok, greedy).unwrap();
    check_person(&serde_json::from_str(&outs[0].text).unwrap());
}

#[test]
fn choices_and_regexes_hold_under_every_sampler() {
    let Some(path) = default_model() else { return };
    let mut r = load(&path);
    let choices = vec!["red".to_string(), "green".into(), "blue \"sky\"".into()];
    let g = r
        .compiler
        .compile(&Constraint::Choice(choices.clone()))
        .unwrap();
    let rx = r
        .compiler
        .compile(&Constraint::Regex(r"[0-9]{3}-[a-z]{2,4}".into()))
        .unwrap();
    let mut reqs = Vec::new();
    for seed in 0..4 {
        for (top_k, top_p, min_p) in [(0, 1.0, 0.0), (5, 0.9, 0.0), (0, 1.0, 0.2)] {
            for g in [&g, &rx] {
                let mut q = request(&r, "My favourite colour is", Some(g.clone()), 1.0, seed, 1);
                q.sampling.top_k = top_k;
                q.sampling.top_p = top_p;
                q.sampling.min_p = min_p;
                q.sampling.presence_penalty = 0.5;
                reqs.push(q);
            }
        }
    }
    let outs = generate_batch(&mut r.model, &r.tok, reqs).unwrap();
    finished(&outs);
    let re = regex_automata::meta::Regex::new(r"^[0-9]{3}-[a-z]{2,4}$").unwrap();
    for pair in outs.chunks(2) {
        assert!(choices.contains(&pair[0].text), "{:?}", pair[0].text);
        assert!(re.is_match(&pair[1].text), "{:?}", pair[1].text);
    }
}

#[test]
fn a_constraint_that_does_not_compile_is_refused_with_its_reason() {
    let Some(path) = default_model() else { return };
    let r = load(&path);
    let e = r
        .compiler
        .compile(&Constraint::JsonSchema(json!({"type": "objekt"})))
        .unwrap_err();
    assert!(matches!(e, Error::Param { .. }), "{e}");
    assert!(e.to_string().contains("objekt"), "{e}");
    let e = r
        .compiler
        .compile(&Constraint::Regex("(unclosed".into()))
        .unwrap_err();
    assert!(e.to_string().contains("regex"), "{e}");
    let e = r
        .compiler
        .compile(&Constraint::Lark("start: nothing_here".into()))
        .unwrap_err();
    assert!(e.to_string().contains("nothing_here"), "{e}");
}

#[test]
fn a_constrained_request_leaves_the_others_bit_identical() {
    let Some(path) = default_model() else { return };
    let mut r = load(&path);
    let g = person(&r);
    let free = |r: &Real, seed: u64| {
        let mut q = request(r, "Once upon a time", None, 0.8, seed, 1);
        q.max_tokens = 16;
        q.sampling.top_logprobs = 3;
        q
    };
    // A constrained request among 31 free ones, as a full batch of 32 rows.
    let alone_reqs: Vec<Request> = (0..31).map(|s| free(&r, s)).collect();
    let alone = generate_batch(&mut r.model, &r.tok, alone_reqs).unwrap();
    let mut mixed_reqs: Vec<Request> = (0..31).map(|s| free(&r, s)).collect();
    mixed_reqs.insert(1, request(&r, "JSON:", Some(g), 1.0, 7, 1));
    let mut mixed = generate_batch(&mut r.model, &r.tok, mixed_reqs).unwrap();
    let constrained: Vec<Output> = mixed.drain(1..2).collect();
    for o in &constrained {
        check_person(&serde_json::from_str(&o.text).unwrap());
    }
    let bits = |o: &Output| -> Vec<Bits> {
        o.tokens
            .iter()
            .map(|t| {
                (
                    t.id,
                    t.logprob.to_bits(),
                    t.top.iter().map(|x| (x.0, x.1.to_bits())).collect(),
                )
            })
            .collect()
    };
    for (a, b) in alone.iter().zip(&mixed) {
        assert_eq!(bits(a), bits(b));
    }
}

#[test]
fn tiny_vocabularies_compile_and_constrain_too() {
    use everett_engine::testutil::{tiny_model, Tiny};
    // Vocabularies with every byte (320 tokens), so that any text can be spelled.
    for t in [Tiny::llama(), Tiny::gemma3(), Tiny::gpt2()] {
        let t = Tiny { vocab: 320, ..t };
        let f = GgufFile::from_bytes(tiny_model(&t, 42)).unwrap();
        let tok = Arc::new(Tokenizer::from_gguf(&f).unwrap());
        let mut model = Model::from_gguf(&f, 1).unwrap();
        let compiler = Compiler::new(tok.clone()).unwrap();
        let g = compiler
            .compile(&Constraint::Choice(vec!["yes".into(), "no".into()]))
            .unwrap();
        let sampling = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        let mut req = Request::new(tok.encode("Answer:", true, false), sampling, 20);
        req.constraint = Some(g);
        req.n = 2;
        let outs = generate_batch(&mut model, &tok, vec![req])
            .unwrap_or_else(|e| panic!("{}: {e}", t.arch));
        for o in &outs {
            assert!(
                ["yes", "no"].contains(&o.text.as_str()),
                "{}: {:?}",
                t.arch,
                o.text
            );
        }
    }
}

#[test]
fn an_exploration_under_a_constraint_holds_only_futures_that_satisfy_it() {
    let Some(path) = default_model() else { return };
    let mut r = load(&path);
    let answers = ["Paris", "Lyon", "Marseille", "Nice"];
    let g = r
        .compiler
        .compile(&Constraint::Choice(
            answers.iter().map(|a| a.to_string()).collect(),
        ))
        .unwrap();
    let prompt = "The capital of France is";
    let req = ExploreRequest {
        prompt: prompt.into(),
        prompt_ids: r.tok.encode(prompt, true, false),
        params: ExploreParams {
            branches: 4,
            width: 8,
            steps: 8,
            ..ExploreParams::default()
        },
        constraint: Some(g),
    };
    let x = explore_request(&mut r.model, &r.tok, req).unwrap();
    assert!(x.paths.len() >= 2, "{:?}", x.paths.len());
    for p in &x.paths {
        let text = p.text.trim_start();
        assert!(answers.contains(&text), "{:?}", p.text);
        assert!(
            matches!(p.finish_reason, PathEnd::Stop | PathEnd::Eos),
            "{p:?}"
        );
    }
    // Every node of the tree lies on the way to an answer (or ends one).
    for n in &x.nodes[1..] {
        let spelled = n.text.trim();
        let eog = n.token_id.is_some_and(|t| r.tok.is_eog(t));
        assert!(
            eog || answers.iter().any(|a| a.contains(spelled)),
            "{spelled:?}"
        );
    }
    let total: f64 = x.paths.iter().map(|p| p.probability).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
}

/// Collapse decoding under a constraint is exactly constrained greedy decoding — the same
/// tokens and logprobs — in every mode, and the tokens the grammar forces, guessed for free,
/// commit several tokens per pass where plain passes commit one.
#[test]
fn collapse_under_a_constraint_is_constrained_greedy_in_fewer_passes() {
    let Some(path) = default_model() else { return };
    let mut r = load(&path);
    let prompt = "Describe a fictional person as JSON:";
    let alone = vec![request(&r, prompt, Some(person(&r)), 0.0, 0, 1)];
    let greedy = generate_batch(&mut r.model, &r.tok, alone)
        .unwrap()
        .remove(0);
    check_person(&serde_json::from_str(&greedy.text).unwrap());
    let ids = |o: &Output| {
        o.tokens
            .iter()
            .map(|t| (t.id, t.logprob.to_bits()))
            .collect::<Vec<_>>()
    };
    let d = CollapseParams::default();
    let mut per_pass = Vec::new();
    for p in [
        d,
        CollapseParams::jacobi(4),
        CollapseParams {
            candidates: 3,
            window: 6,
            ..d
        },
        CollapseParams {
            fast_forward: false,
            ..d
        },
    ] {
        let mut req = request(&r, prompt, Some(person(&r)), 0.0, 0, 1);
        req.collapse = Some(p);
        let run = collapse(&mut r.model, &r.tok, req, |_| {}).unwrap();
        assert_eq!(ids(&run.output), ids(&greedy), "{p:?}: {}", run.output.text);
        assert_eq!(run.output.finish_reason, greedy.finish_reason);
        let forced = run
            .passes
            .iter()
            .filter(|x| x.source == Source::Grammar)
            .count();
        assert_eq!(forced > 0, p.fast_forward, "{p:?}");
        per_pass.push(run.tokens_per_pass());
    }
    // Fast-forward guesses save passes: the default beats the same run without them.
    assert!(per_pass[0] > per_pass[3] * 1.3, "{per_pass:?}");
}

/// Masks made ahead of the logits, beside the forward pass (a model of 1 compute thread leaves
/// a core free for them on a machine of 2 or more), give the very samples that masks made in
/// the reads do (2 threads on 2 cores: no core to spare).
#[test]
fn masks_made_beside_the_forward_pass_change_nothing() {
    let Some(path) = default_model() else { return };
    let mut outs = Vec::new();
    for threads in [1, 2] {
        let mut r = load(&path);
        r.model = Model::from_gguf(&GgufFile::open(&path).unwrap(), threads).unwrap();
        let g = person(&r);
        let reqs = (0..4)
            .map(|seed| request(&r, "A person as JSON:", Some(g.clone()), 1.0, seed, 2))
            .collect();
        let o = generate_batch(&mut r.model, &r.tok, reqs).unwrap();
        outs.push(
            o.iter()
                .map(|o| {
                    check_person(&serde_json::from_str(&o.text).unwrap());
                    o.tokens
                        .iter()
                        .map(|t| (t.id, t.logprob.to_bits()))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>(),
        );
    }
    assert!(
        std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2,
        "this check needs a second core to overlap masks with the forward pass"
    );
    assert_eq!(outs[0], outs[1]);
}
