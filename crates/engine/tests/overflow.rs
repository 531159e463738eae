//! Streaming past the context (`overflow`): on a one-layer model, where a key depends only on its
//! token and position, a streamed sequence's predictions equal a fresh computation of the tokens
//! it kept (so the drops, the re-assigned positions and the re-rotated keys are all right); on a
//! six-layer Gemma 3 with sliding windows, generation runs far past the context in a KV cache
//! no bigger than the window, samples sharing a prompt stay identical, and bad requests are
//! refused with the reason.

use everett_engine::engine::{EngineConfig, Event, ScoreRequest, Task};
use everett_engine::generate::{FinishReason, Request};
use everett_engine::gguf::GgufFile;
use everett_engine::kv::KvType;
use everett_engine::model::Model;
use everett_engine::oneshot;
use everett_engine::overflow::{Overflow, Stream};
use everett_engine::request::Output;
use everett_engine::sample::SamplingParams;
use everett_engine::testutil::{tiny_model, Tiny};
use everett_engine::tokenizer::Tokenizer;

fn load(t: &Tiny) -> (Model, Tokenizer) {
    let f = GgufFile::from_bytes(tiny_model(t, 7)).unwrap();
    let mut m = Model::from_gguf(&f, 2).unwrap();
    m.kv_type = KvType::F32;
    (m, Tokenizer::from_gguf(&f).unwrap())
}

fn stream(window: usize) -> Overflow {
    Overflow::Stream(Stream {
        window: Some(window),
        sinks: 16,
    })
}

/// Negative log-likelihoods of `ids[from + 1..]` (one scoring request).
fn score(
    m: &mut Model,
    tok: &Tokenizer,
    ids: Vec<u32>,
    from: usize,
    overflow: Overflow,
) -> Vec<f32> {
    let mut out = None;
    let task = Task::Score(ScoreRequest {
        ids,
        from,
        overflow,
    });
    oneshot::run(m, tok, EngineConfig::default(), vec![task], |_, e| {
        match e {
            Event::Scored(v) => out = Some(v),
            Event::Error(e) => panic!("{e}"),
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    out.unwrap()
}

#[test]
fn a_streamed_one_layer_model_predicts_as_a_fresh_run_of_the_tokens_it_kept() {
    let t = Tiny {
        n_layer: 1,
        ..Tiny::llama().float()
    };
    let (mut m, tok) = load(&t);
    let (window, sinks, chunk) = (128, 16, 32);
    // 2.5 contexts of tokens (the context is 256).
    let ids: Vec<u32> = (0..640u32).map(|i| 4 + (i * 37 + i / 7) % 90).collect();
    let streamed = score(&mut m, &tok, ids.clone(), 0, stream(window));
    assert_eq!(streamed.len(), ids.len() - 1);
    // The engine runs a streaming sequence in chunks of window/4 tokens; before a chunk that
    // would overflow the window it forgets window/4 tokens after the sinks.
    let (mut kept, mut drops): (Vec<u32>, usize) = (Vec::new(), 0);
    for (c, part) in ids.chunks(chunk).enumerate() {
        if kept.len() + part.len() > window {
            kept.drain(sinks..sinks + chunk);
            drops += 1;
        }
        let start = c * chunk;
        let mut fresh_ids = kept.clone();
        fresh_ids.extend(&ids[start..(start + chunk + 1).min(ids.len())]);
        let fresh = score(&mut m, &tok, fresh_ids, kept.len(), Overflow::Stop);
        for (j, f) in fresh.iter().enumerate() {
            let s = streamed[start + j];
            assert!(
                (s - f).abs() < 2e-3,
                "position {}: streamed {s}, fresh {f}",
                start + j
            );
        }
        kept.extend(part);
    }
    // 640 tokens through a window of 128 in chunks of 32: full after 4 chunks, then one drop
    // before each of the other 16.
    assert_eq!(drops, 16);
}

/// Runs `reqs` on one engine with a KV cache of `kv_tokens`; every sample's output.
fn generate(m: &mut Model, tok: &Tokenizer, reqs: Vec<Request>, kv_tokens: usize) -> Vec<Output> {
    let cfg = EngineConfig {
        kv_tokens,
        ..EngineConfig::default()
    };
    let mut outs: Vec<Vec<Output>> = reqs
        .iter()
        .map(|r| vec![Output::new(r.prompt_ids.clone()); r.n])
        .collect();
    let tasks = reqs.into_iter().map(Task::Generate).collect();
    oneshot::run(m, tok, cfg, tasks, |i, e| {
        if let Event::Error(e) = &e {
            panic!("request {i}: {e}");
        }
        for (k, o) in outs[i].iter_mut().enumerate() {
            o.absorb(&e, k);
        }
        Ok(())
    })
    .unwrap();
    outs.into_iter().flatten().collect()
}

fn greedy(prompt: Vec<u32>, max_tokens: usize, n: usize, overflow: Overflow) -> Request {
    Request {
        n,
        ignore_eos: true,
        overflow,
        ..Request::new(prompt, SamplingParams::default(), max_tokens)
    }
}

#[test]
fn gemma3_streams_far_past_its_context_in_a_cache_the_size_of_its_window() {
    let t = Tiny::gemma3();
    let (mut m, tok) = load(&t);
    assert_eq!(t.ctx, 256);
    let prompt: Vec<u32> = (0..100u32).map(|i| 4 + (i * 13) % 90).collect();
    let window = 128;
    // Four contexts' worth of tokens; the cache holds one window (and a block).
    let one = generate(
        &mut m,
        &tok,
        vec![greedy(prompt.clone(), 1000, 1, stream(window))],
        window + 16,
    );
    assert_eq!(one[0].tokens.len(), 1000);
    assert_eq!(one[0].finish_reason, Some(FinishReason::Length));
    // Two samples share the prompt's blocks: the first drop copies the shared ones before
    // turning them. Greedy, both must be the single sample's tokens.
    let two = generate(
        &mut m,
        &tok,
        vec![greedy(prompt.clone(), 1000, 2, stream(window))],
        2 * (window + 16),
    );
    let ids = |o: &Output| o.tokens.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&two[0]), ids(&one[0]));
    assert_eq!(ids(&two[1]), ids(&one[0]));
    // Until the first drop, streaming changes nothing.
    let stopped = generate(
        &mut m,
        &tok,
        vec![greedy(prompt, 28, 1, Overflow::Stop)],
        256,
    );
    assert_eq!(ids(&stopped[0])[..], ids(&one[0])[..28]);
}

#[test]
fn requests_that_cannot_stream_are_refused_with_the_reason() {
    let (mut m, tok) = load(&Tiny::gemma3());
    let (g, gtok) = load(&Tiny::gpt2());
    let err = |m: &mut Model, tok: &Tokenizer, r: Request| {
        let mut e = String::new();
        let run = oneshot::run(
            m,
            tok,
            EngineConfig::default(),
            vec![Task::Generate(r)],
            |_, ev| {
                if let Event::Error(x) = ev {
                    e = x.to_string();
                }
                Ok(())
            },
        );
        if let Err(x) = run {
            e = x.to_string();
        }
        e
    };
    let p = vec![5u32; 20];
    // Past the context without streaming.
    assert!(err(&mut m, &tok, greedy(p.clone(), 300, 1, Overflow::Stop)).contains("context of 256"));
    // A window beyond the context, one too small for the sliding windows, sinks off the blocks.
    let e = err(&mut m, &tok, greedy(p.clone(), 300, 1, stream(512)));
    assert!(e.contains("window") && e.contains("context"), "{e}");
    let e = err(&mut m, &tok, greedy(p.clone(), 300, 1, stream(64)));
    assert!(e.contains("too small"), "{e}");
    let odd = Overflow::Stream(Stream {
        window: None,
        sinks: 4,
    });
    assert!(
        err(&mut m, &tok, greedy(p.clone(), 300, 1, odd)).contains("multiple of the KV block size")
    );
    // Learned absolute positions cannot move.
    let mut g = g;
    let e = err(&mut g, &gtok, greedy(p, 300, 1, stream(128)));
    assert!(e.contains("absolute positions"), "{e}");
}

#[test]
fn a_request_that_fits_runs_whatever_its_stream_settings() {
    let (mut m, tok) = load(&Tiny::gemma3());
    let p = vec![5u32; 20];
    // A window too small to stream with, or one larger than this cache (sized to the request),
    // never comes into play for a request that fits: it runs as if it stopped at the end.
    for w in [64, 4096] {
        let outs = generate(&mut m, &tok, vec![greedy(p.clone(), 30, 1, stream(w))], 64);
        assert_eq!(outs[0].tokens.len(), 30);
    }
    // Collapse decoding of a request that fits runs too (a server may stream by default).
    let collapse = Request {
        collapse: Some(Default::default()),
        ..greedy(p, 30, 1, stream(128))
    };
    assert_eq!(
        generate(&mut m, &tok, vec![collapse], 256)[0].tokens.len(),
        30
    );
}
