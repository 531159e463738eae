//! The engine end to end on tiny models of every architecture and on the real model: batch
//! invariance under continuous batching (a greedy request's tokens and logprobs are the same
//! bits alone and arriving mid-stream among 31 others in a cache small enough to preempt), an
//! exploration sharing forward passes with generations, and the engine thread's handle.

use everett_engine::engine::handle::spawn;
use everett_engine::engine::{Engine, EngineConfig, Event, Events, ExploreRequest, Task};
use everett_engine::error::Error;
use everett_engine::generate::Request;
use everett_engine::gguf::GgufFile;
use everett_engine::kv::KvType;
use everett_engine::model::Model;
use everett_engine::oneshot::explore;
use everett_engine::sample::{Rng, SamplingParams};
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::superposition::ExploreParams;
use everett_engine::testutil::{default_model, tiny_model, Slow, Tiny};
use everett_engine::tokenizer::Tokenizer;
use std::sync::Arc;
use std::time::Duration;

fn load_tiny(t: &Tiny) -> (Model, Tokenizer) {
    let f = GgufFile::from_bytes(tiny_model(t, 42)).unwrap();
    (
        Model::from_gguf(&f, 2).unwrap(),
        Tokenizer::from_gguf(&f).unwrap(),
    )
}

fn load_real() -> Option<(Model, Tokenizer)> {
    let f = GgufFile::open(&default_model()?).unwrap();
    Some((
        Model::from_gguf(&f, 2).unwrap(),
        Tokenizer::from_gguf(&f).unwrap(),
    ))
}

/// Token ids and logprob bits of a finished stream (top logprobs included).
type Trace = Vec<(u32, u32, Vec<(u32, u32)>)>;

fn trace(events: &mut Events) -> Trace {
    trace_of(std::iter::from_fn(|| events.try_recv().ok()))
}

/// The trace of a request that runs on the engine thread, once its stream has ended.
fn trace_blocking(events: &mut Events) -> Trace {
    trace_of(std::iter::from_fn(|| events.blocking_recv()))
}

fn trace_of(events: impl Iterator<Item = Event>) -> Trace {
    let mut out = Vec::new();
    for e in events {
        match e {
            Event::Token { token, .. } => out.push((
                token.id,
                token.logprob.to_bits(),
                token.top.iter().map(|t| (t.0, t.1.to_bits())).collect(),
            )),
            Event::Error(e) => panic!("request failed: {e}"),
            _ => {}
        }
    }
    out
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Task {
    let sampling = SamplingParams {
        top_logprobs: 4,
        ..Default::default()
    };
    Task::Generate(Request::new(prompt, sampling, max_tokens))
}

fn random_prompt(rng: &mut Rng, len: usize, lo: u32, span: u32) -> Vec<u32> {
    (0..len)
        .map(|_| lo + (rng.next_f64() * span as f64) as u32 % span)
        .collect()
}

/// Shape of one invariance run.
struct Crowd {
    /// Token ids are drawn from lo..lo + span (ordinary tokens of the vocabulary).
    lo: u32,
    span: u32,
    target_len: usize,
    target_new: usize,
    others_len: (usize, usize),
    others_new: (usize, usize),
    kv_tokens: usize,
    budget: usize,
}

/// The target alone, then among 31 others arriving over the first steps (the target at
/// `arrive`); returns both traces and the crowded run's preemptions and prefix-hit tokens.
fn alone_and_crowded(
    m: &mut Model,
    tok: &Tokenizer,
    c: &Crowd,
    seed: u64,
) -> (Trace, Trace, u64, u64) {
    let mut rng = Rng::new(seed);
    let target = random_prompt(&mut rng, c.target_len, c.lo, c.span);
    let alone = {
        let mut e = Engine::new(&mut *m, tok, EngineConfig::default());
        let (_, mut s) = e.submit(greedy(target.clone(), c.target_new)).unwrap();
        e.run_until_idle().unwrap();
        trace(&mut s)
    };
    let cfg = EngineConfig {
        kv_tokens: c.kv_tokens,
        scheduler: SchedulerConfig {
            max_batch_tokens: c.budget,
            max_seqs: 32,
            max_logit_rows: 64,
            ..SchedulerConfig::default()
        },
    };
    let mut e = Engine::new(&mut *m, tok, cfg);
    let arrive = 1 + (rng.next_f64() * 6.0) as usize;
    let mut others: Vec<Events> = Vec::new();
    let mut mine = None;
    let mut step = 0;
    while others.len() < 31 || mine.is_none() || e.has_work() {
        // Three or four others arrive per step; some share the target's first tokens.
        for _ in 0..4 {
            if others.len() < 31 {
                let len = c.others_len.0
                    + (rng.next_f64() * (c.others_len.1 - c.others_len.0) as f64) as usize;
                let new = c.others_new.0
                    + (rng.next_f64() * (c.others_new.1 - c.others_new.0) as f64) as usize;
                let mut p = random_prompt(&mut rng, len, c.lo, c.span);
                if others.len().is_multiple_of(5) {
                    let shared = len.min(target.len() - 1);
                    p[..shared].copy_from_slice(&target[..shared]);
                }
                others.push(e.submit(greedy(p, new)).unwrap().1);
            }
        }
        if step == arrive {
            mine = Some(e.submit(greedy(target.clone(), c.target_new)).unwrap().1);
        }
        e.step().unwrap();
        step += 1;
        assert!(step < 10_000, "no progress");
    }
    for s in &mut others {
        assert!(!trace(s).is_empty());
    }
    let stats = e.stats();
    assert_eq!(e.used_blocks(), 0);
    let mine = trace(&mut mine.unwrap());
    (
        alone,
        mine,
        stats.scheduler.preemptions,
        stats.prefix.hit_tokens,
    )
}

#[test]
fn greedy_is_bit_identical_alone_and_mid_stream_among_31_with_preemption_tiny_models() {
    let quantized = [KvType::Q8_0, KvType::Q4_0].map(|k| (Tiny::gemma3(), k));
    for (t, kv) in [Tiny::gemma3(), Tiny::llama(), Tiny::gpt2()]
        .map(|t| (t, KvType::F16))
        .into_iter()
        .chain(quantized)
    {
        let (mut m, tok) = load_tiny(&t);
        m.set_kv_type(kv).unwrap();
        let crowd = Crowd {
            lo: 40,
            span: 50,
            target_len: 37,
            target_new: 40,
            others_len: (4, 70),
            others_new: (5, 60),
            kv_tokens: 160,
            budget: 48,
        };
        let (mut preempted, mut hits) = (0, 0);
        for seed in 1..=3 {
            let (alone, crowded, p, h) = alone_and_crowded(&mut m, &tok, &crowd, seed);
            assert!(!alone.is_empty(), "{}", t.arch);
            assert_eq!(alone, crowded, "{} {kv:?} seed {seed}", t.arch);
            preempted += p;
            hits += h;
        }
        assert!(preempted > 0, "{} {kv:?}: the cache never ran out", t.arch);
        assert!(hits > 0, "{} {kv:?}: no prefix was ever reused", t.arch);
    }
}

#[test]
fn every_architecture_is_batch_invariant_experts_included() {
    use everett_engine::testutil::archs::{arch_model, Storage, ARCHS};
    for name in ARCHS {
        let f = GgufFile::from_bytes(arch_model(name, Storage::Q8_0, 7, false)).unwrap();
        let (mut m, tok) = (
            Model::from_gguf(&f, 2).unwrap(),
            Tokenizer::from_gguf(&f).unwrap(),
        );
        let crowd = Crowd {
            lo: 40,
            span: 300,
            target_len: 37,
            target_new: 30,
            others_len: (4, 70),
            others_new: (5, 40),
            kv_tokens: 320,
            budget: 48,
        };
        let (alone, crowded, preempted, _) = alone_and_crowded(&mut m, &tok, &crowd, 1);
        assert!(!alone.is_empty(), "{name}");
        assert_eq!(
            alone, crowded,
            "{name}: a row depends on the rest of its batch"
        );
        assert!(preempted > 0, "{name}: the cache never ran out");
    }
}

#[test]
fn greedy_is_bit_identical_alone_and_mid_stream_among_31_with_preemption_real_model() {
    let Some((mut m, tok)) = load_real() else {
        return;
    };
    let crowd = Crowd {
        lo: 1000,
        span: 20_000,
        target_len: 45,
        target_new: 24,
        others_len: (8, 90),
        others_new: (4, 24),
        kv_tokens: 480,
        budget: 256,
    };
    let (alone, crowded, preemptions, hits) = alone_and_crowded(&mut m, &tok, &crowd, 7);
    assert!(!alone.is_empty());
    assert_eq!(alone, crowded);
    assert!(preemptions > 0, "the cache never ran out");
    assert!(hits > 0, "no prefix was ever reused");
}

#[test]
fn an_exploration_and_generations_share_forward_passes_and_results() {
    let (mut m, tok) = load_tiny(&Tiny::gemma3());
    let prompt: Vec<u32> = vec![2, 50, 51, 52, 60];
    let params = ExploreParams {
        branches: 3,
        width: 6,
        steps: 8,
        ..Default::default()
    };
    let alone = explore(&mut m, &tok, "p", &prompt, &params).unwrap();
    let gen_alone = {
        let mut e = Engine::new(&mut m, &tok, EngineConfig::default());
        let (_, mut s) = e.submit(greedy(vec![2, 70, 71], 12)).unwrap();
        e.run_until_idle().unwrap();
        trace(&mut s)
    };
    let mut e = Engine::new(&mut m, &tok, EngineConfig::default());
    let (g1, mut s1) = e.submit(greedy(vec![2, 70, 71], 12)).unwrap();
    let req = ExploreRequest {
        prompt: "p".into(),
        prompt_ids: prompt,
        params,
        constraint: None,
    };
    let (x, mut sx) = e.submit(Task::Explore(req)).unwrap();
    let mut shared_steps = 0;
    while e.has_work() {
        let r = e.step().unwrap();
        shared_steps += usize::from(r.ran.contains(&g1) && r.ran.contains(&x));
    }
    assert!(shared_steps >= 8, "only {shared_steps} steps ran both");
    assert_eq!(trace(&mut s1), gen_alone);
    let together = loop {
        match sx.try_recv().unwrap() {
            Event::Explored(x) => break x,
            Event::Error(e) => panic!("{e}"),
            _ => {}
        }
    };
    assert_eq!(together.nodes, alone.nodes);
    assert_eq!(together.paths, alone.paths);
}

/// A request that runs for `n` tokens whatever the model says.
fn endless(prompt: Vec<u32>, n: usize) -> Task {
    Task::Generate(Request {
        ignore_eos: true,
        ..Request::new(prompt, SamplingParams::default(), n)
    })
}

#[test]
fn the_engine_thread_serves_handles_aborts_and_shuts_down() {
    let (m, tok) = load_tiny(&Tiny::llama());
    let engine = Engine::new(
        Slow(m, Duration::from_millis(5)),
        Arc::new(tok),
        EngineConfig::default(),
    );
    let (handle, join) = spawn(engine);
    // Several front-end threads at once.
    let workers: Vec<_> = (0..4u32)
        .map(|i| {
            let h = handle.clone();
            std::thread::spawn(move || {
                let (_, mut s) = h.submit(greedy(vec![2, 40 + i, 41], 10));
                let mut n = 0;
                while let Some(e) = s.blocking_recv() {
                    match e {
                        Event::Token { .. } => n += 1,
                        Event::Error(e) => panic!("{e}"),
                        _ => {}
                    }
                }
                n
            })
        })
        .collect();
    for w in workers {
        assert!(w.join().unwrap() >= 1);
    }
    // Bad input comes back on the stream; abort of a live request ends it; a stale id errs.
    let (_, mut bad) = handle.submit(greedy(vec![], 4));
    assert!(matches!(
        bad.blocking_recv(),
        Some(Event::Error(Error::InvalidRequest(_)))
    ));
    let (id, mut long) = handle.submit(endless(vec![2, 40], 250));
    assert!(matches!(long.blocking_recv(), Some(Event::Token { .. })));
    handle.abort(id).unwrap();
    let last = std::iter::from_fn(|| long.blocking_recv()).last();
    assert!(matches!(last, Some(Event::Error(Error::Aborted(_)))));
    assert!(matches!(handle.abort(id), Err(Error::UnknownRequest(_))));
    assert_eq!(handle.stats().unwrap().used_blocks, 0);
    // Shutdown: running work ends within the grace period, new work is refused.
    let (_, mut running) = handle.submit(endless(vec![2, 41], 250));
    assert!(matches!(running.blocking_recv(), Some(Event::Token { .. })));
    handle.shutdown(Duration::from_millis(0));
    let last = std::iter::from_fn(|| running.blocking_recv()).last();
    assert!(
        matches!(last, Some(Event::Error(Error::ShuttingDown))),
        "{last:?}"
    );
    join.join().unwrap();
    let (_, mut late) = handle.submit(greedy(vec![2, 41], 2));
    assert!(matches!(
        late.blocking_recv(),
        Some(Event::Error(Error::ShuttingDown))
    ));
}

/// The failure boundary: a panic inside a step (injected at step 3) fails the request that was
/// running with an internal error, keeps the one that was still waiting, rebuilds the engine,
/// and every later result is the same as a fresh engine's; no KV block is left behind.
#[test]
fn a_panic_in_a_step_fails_what_ran_and_the_rebuilt_engine_serves_as_a_fresh_one() {
    let (m, tok) = load_tiny(&Tiny::llama());
    let tok = Arc::new(tok);
    let fresh = |task: Task| {
        let (m, _) = load_tiny(&Tiny::llama());
        let mut e = Engine::new(m, tok.clone(), EngineConfig::default());
        let (_, mut s) = e.submit(task).unwrap();
        e.run_until_idle().unwrap();
        trace(&mut s)
    };
    // One running sequence at a time: `waiting` is queued behind `running` when step 3 panics.
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_seqs: 1,
            ..SchedulerConfig::default()
        },
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(m, tok.clone(), cfg);
    engine.inject_faults(&[3]);
    let (_, mut running) = engine.submit(endless(vec![2, 40, 41], 40)).unwrap();
    let (_, mut waiting) = engine.submit(greedy(vec![2, 50, 51, 52], 12)).unwrap();
    let (handle, join) = spawn(engine);
    let events: Vec<Event> = std::iter::from_fn(|| running.blocking_recv()).collect();
    let tokens = events
        .iter()
        .filter(|e| matches!(e, Event::Token { .. }))
        .count();
    assert_eq!(tokens, 2, "steps 1 and 2 ran, step 3 panicked");
    match events.last() {
        Some(Event::Error(Error::Internal(msg))) => {
            assert!(msg.contains("injected fault at step 3"), "{msg}")
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    assert_eq!(
        trace_blocking(&mut waiting),
        fresh(greedy(vec![2, 50, 51, 52], 12)),
        "the waiting request ran after the rebuild as on a fresh engine"
    );
    // A request after the fault, on the rebuilt engine.
    let later = greedy(vec![2, 60, 61], 10);
    let (_, mut s) = handle.submit(later.clone());
    assert_eq!(trace_blocking(&mut s), fresh(later));
    let stats = handle.stats().unwrap();
    assert_eq!(stats.restarts, 1);
    assert_eq!((stats.used_blocks, stats.running, stats.waiting), (0, 0, 0));
    assert_eq!(handle.health(), everett_engine::engine::handle::Health::Ok);
    handle.shutdown(Duration::ZERO);
    join.join().unwrap();
}

/// A panic while the engine takes a submission answers that submission with an internal error
/// (not a silently closed stream), and the rebuilt engine serves the next one.
#[test]
fn a_panic_while_taking_a_submission_answers_it_and_serving_goes_on() {
    let (m, tok) = load_tiny(&Tiny::llama());
    let mut engine = Engine::new(m, Arc::new(tok), EngineConfig::default());
    engine.inject_submit_faults(&[1]);
    let (handle, join) = spawn(engine);
    let (_, mut first) = handle.submit(greedy(vec![2, 40, 41], 4));
    match first.blocking_recv() {
        Some(Event::Error(Error::Internal(msg))) => {
            assert!(msg.contains("injected fault at submission 1"), "{msg}")
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    let (_, mut second) = handle.submit(greedy(vec![2, 40, 41], 4));
    assert_eq!(trace_blocking(&mut second).len(), 4);
    let stats = handle.stats().unwrap();
    assert_eq!((stats.restarts, stats.used_blocks), (1, 0));
    handle.shutdown(Duration::ZERO);
    join.join().unwrap();
}

#[test]
fn a_gguf_with_nan_scales_loads_and_every_sampler_survives_its_logits() {
    let mut bytes = tiny_model(&Tiny::gemma3(), 42);
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let info = f.tensor_info("token_embd.weight").unwrap().clone();
    let data = f.tensor_data(&info).to_vec();
    let at = bytes.windows(64).position(|w| w == &data[..64]).unwrap();
    // Q8_0 rows of 64 values: two 34-byte blocks, each opening with its f16 scale. NaN the
    // scales of tokens 4..12 (tied output: their logits are NaN for every input).
    let row = data.len() / 96;
    for t in 4..12 {
        bytes[at + t * row..at + t * row + 2].copy_from_slice(&0x7E00u16.to_le_bytes());
    }
    let f = GgufFile::from_bytes(bytes).unwrap();
    let (mut m, tok) = (
        Model::from_gguf(&f, 2).unwrap(),
        Tokenizer::from_gguf(&f).unwrap(),
    );
    let mut e = Engine::new(&mut m, &tok, EngineConfig::default());
    let mut streams = Vec::new();
    for (temperature, top_k, top_p, min_p) in [
        (0.0, 0, 1.0, 0.0),
        (0.8, 5, 1.0, 0.1),
        (0.8, 0, 0.9, 0.1),
        (1.0, 0, 1.0, 0.05),
    ] {
        let sampling = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            top_logprobs: 3,
            ..Default::default()
        };
        let req = Request::new(vec![2, 30, 31, 32], sampling, 8);
        streams.push(e.submit(Task::Generate(req)).unwrap().1);
    }
    e.run_until_idle().unwrap();
    for s in &mut streams {
        let t = trace(s);
        assert!(!t.is_empty() && t.iter().all(|x| (x.0 as usize) < 96));
    }
}

/// The tokens of one finished request run alone on `engine`.
fn run_alone<M: everett_engine::engine::Runner>(
    engine: &mut Engine<M, Arc<Tokenizer>>,
    req: Request,
) -> Vec<(u32, String)> {
    let (_, mut events) = engine.submit(Task::Generate(req)).unwrap();
    engine.run_until_idle().unwrap();
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            Event::Token { token, .. } => out.push((token.id, token.text)),
            Event::Error(e) => panic!("request failed: {e}"),
            _ => {}
        }
    }
    out
}

#[test]
fn min_tokens_holds_back_stop_tokens_and_stop_strings() {
    let (m, tok) = load_tiny(&Tiny::llama());
    let mut engine = Engine::new(m, Arc::new(tok), EngineConfig::default());
    let prompt = vec![2, 40, 41, 42];
    let free = run_alone(
        &mut engine,
        Request {
            ignore_eos: true,
            ..Request::new(prompt.clone(), SamplingParams::default(), 8)
        },
    );
    let first = free[0].0;
    // The greedy first token as a stop id ends the request at once without min_tokens...
    let stop_first = Request {
        stop_ids: vec![first],
        ..Request::new(prompt.clone(), SamplingParams::default(), 8)
    };
    assert_eq!(run_alone(&mut engine, stop_first.clone()).len(), 1);
    // ...and is never sampled among the first three with min_tokens = 3.
    let held = run_alone(
        &mut engine,
        Request {
            min_tokens: 3,
            ..stop_first
        },
    );
    assert!(held.len() >= 3, "{held:?}");
    assert!(held[..3].iter().all(|t| t.0 != first), "{held:?}");
    // A stop string is not looked for before min_tokens: the first token's text stays.
    if !free[0].1.is_empty() {
        let by_string = Request {
            stop_strings: vec![free[0].1.clone()],
            min_tokens: 2,
            ignore_eos: true,
            ..Request::new(prompt.clone(), SamplingParams::default(), 8)
        };
        let out = run_alone(&mut engine, by_string);
        assert!(out.len() >= 2 && out[0].1 == free[0].1, "{out:?}");
    }
    // More than max_tokens is refused, naming the field.
    let too_many = Request {
        min_tokens: 9,
        ..Request::new(prompt, SamplingParams::default(), 8)
    };
    let err = match engine.submit(Task::Generate(too_many)) {
        Err(e) => e,
        Ok((_, mut events)) => {
            engine.run_until_idle().unwrap();
            match events.try_recv() {
                Ok(Event::Error(e)) => e,
                _ => panic!("min_tokens > max_tokens was accepted"),
            }
        }
    };
    assert!(err.to_string().contains("min_tokens"), "{err}");
}
