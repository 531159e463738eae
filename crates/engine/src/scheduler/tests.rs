//! Scheduler scenarios on a fake model. The fake writes each token id into the KV cache and
//! derives a row's logits from what it reads back (the sum of the ids its sequence can see,
//! globally and in a sliding window), so a wrong block table, a lost copy-on-write, a bad prefix
//! hit or a botched recompute after preemption all change the tokens. After every scenario the
//! block pool must be empty again.

use super::SchedulerConfig;
use crate::batch::Batch;
use crate::engine::{Engine, EngineConfig, Runner, ScoreRequest};
use crate::error::{Error, Result};
use crate::generate::{FinishReason, Request};
use crate::gguf::GgufFile;
use crate::kernels::heads::KvRows;
use crate::kernels::pool::ThreadPool;
use crate::kv::{KvCache, KvConfig, KvType, SeqId};
use crate::request::{Event, Events, Task};
use crate::sample::SamplingParams;
use crate::testutil::{tiny_model, Tiny};
use crate::tokenizer::Tokenizer;

const VOCAB: usize = 96;
const WINDOW: usize = 24;
const BS: usize = 16;

struct Fake {
    pool: ThreadPool,
    /// Rows of each forward pass, and how many of them wanted logits.
    steps: Vec<(usize, usize)>,
    /// Rows per sequence per forward (to check chunking).
    spans: Vec<Vec<usize>>,
    /// Logits become NaN from this forward on.
    nan_from: Option<usize>,
}

impl Fake {
    fn new() -> Self {
        Self {
            pool: ThreadPool::new(1),
            steps: Vec::new(),
            spans: Vec::new(),
            nan_from: None,
        }
    }
}

/// The token the fake predicts after a sequence whose visible ids sum to `global` (all) and
/// `window` (the last WINDOW): never a control token (0..4).
fn next_token(global: f32, window: f32) -> u32 {
    4 + ((global as usize * 7 + window as usize * 3) % (VOCAB - 4)) as u32
}

fn sum(kv: &KvCache, layer: usize, seq: usize, pos: usize) -> f32 {
    let v = kv.view(layer, seq);
    v.runs(v.first_visible(pos), pos + 1)
        .map(|(_, count, k, _)| match k {
            KvRows::F32(k) => (0..count).map(|i| k[i * v.row()]).sum::<f32>(),
            _ => unreachable!("the fake uses f32"),
        })
        .sum()
}

impl Runner for Fake {
    fn vocab(&self) -> usize {
        VOCAB
    }
    fn context_length(&self) -> usize {
        4096
    }
    fn kv_config(&self, capacity_tokens: usize) -> KvConfig {
        KvConfig {
            layer_windows: vec![None, Some(WINDOW)],
            row: 2,
            block_size: BS,
            capacity_tokens,
            dtype: KvType::F32,
        }
    }
    fn forward(&mut self, b: &Batch, kv: &mut KvCache, logits: &mut Vec<f32>) -> Result<()> {
        for i in 0..b.len() {
            let x = [b.tokens[i] as f32; 2];
            kv.write(0, b.seqs[i], b.positions[i], &x, &x);
            kv.write(1, b.seqs[i], b.positions[i], &x, &x);
        }
        logits.clear();
        for i in (0..b.len()).filter(|&i| b.want_logits[i]) {
            let (s, p) = (b.seqs[i], b.positions[i]);
            let mut row = vec![0.0; VOCAB];
            row[next_token(sum(kv, 0, s, p), sum(kv, 1, s, p)) as usize] = 5.0;
            if self.nan_from.is_some_and(|n| self.steps.len() >= n) {
                row.iter_mut().step_by(3).for_each(|v| *v = f32::NAN);
            }
            logits.extend(row);
        }
        let wanted = b.want_logits.iter().filter(|&&w| w).count();
        self.steps.push((b.len(), wanted));
        self.spans.push(b.spans().iter().map(|s| s.2).collect());
        Ok(())
    }
    fn pool(&self) -> &ThreadPool {
        &self.pool
    }
    // The fake's keys are its tokens, the same at every position: moving them changes nothing.
    fn can_shift(&self) -> bool {
        true
    }
    fn shift_keys(&self, _: &mut KvCache, _: SeqId, _: usize, _: usize) {}
}

fn tokenizer() -> Tokenizer {
    let f = GgufFile::from_bytes(tiny_model(&Tiny::gemma3(), 1)).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

/// The greedy continuation the fake must produce for `prompt`, computed without any cache.
fn expected(prompt: &[u32], n: usize) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let p = ids.len() - 1;
        let global: f32 = ids.iter().map(|&t| t as f32).sum();
        let window: f32 = ids[(p + 1).saturating_sub(WINDOW)..]
            .iter()
            .map(|&t| t as f32)
            .sum();
        ids.push(next_token(global, window));
    }
    ids[prompt.len()..].to_vec()
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| 4 + (i * 13 + salt * 29) % 90)
        .collect()
}

fn gen(prompt: Vec<u32>, max_tokens: usize) -> Task {
    Task::Generate(Request::new(prompt, SamplingParams::default(), max_tokens))
}

fn engine(tok: &Tokenizer, kv_tokens: usize, cfg: SchedulerConfig) -> Engine<Fake, &Tokenizer> {
    Engine::new(
        Fake::new(),
        tok,
        EngineConfig {
            kv_tokens,
            scheduler: cfg,
        },
    )
}

fn cfg(tokens: usize, seqs: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_tokens: tokens,
        max_seqs: seqs,
        max_logit_rows: 64,
        ..SchedulerConfig::default()
    }
}

/// Every token of a finished generation stream, or its error.
fn tokens(events: &mut Events) -> std::result::Result<Vec<u32>, Error> {
    let mut out = Vec::new();
    let mut finished = false;
    while let Ok(e) = events.try_recv() {
        match e {
            Event::Token { token, .. } => out.push(token.id),
            Event::Finished { .. } => finished = true,
            Event::Error(e) => return Err(e),
            _ => {}
        }
    }
    assert!(finished, "the stream ended without a finish");
    Ok(out)
}

fn assert_empty<T: std::ops::Deref<Target = Tokenizer>>(e: &mut Engine<Fake, T>) {
    assert!(!e.has_work());
    assert_eq!(e.used_blocks(), 0, "every block is returned");
    e.clear_prefix_cache();
    assert_eq!(e.kv_idle_blocks(), 0);
}

#[test]
fn budget_is_respected_and_decodes_go_first() {
    let tok = tokenizer();
    let mut e = engine(&tok, 4096, cfg(40, 8));
    let (_, mut a) = e.submit(gen(prompt(10, 1), 30)).unwrap();
    e.step().unwrap(); // a's prompt
    let (_, mut b) = e.submit(gen(prompt(100, 2), 5)).unwrap();
    for _ in 0..3 {
        let r = e.step().unwrap();
        assert!(r.tokens <= 40);
    }
    // Each step after b arrived: a's decode row first, then a 39-token chunk of b's prompt.
    assert_eq!(
        e.model().spans[1..4],
        [vec![1, 39], vec![1, 39], vec![1, 22]]
    );
    e.run_until_idle().unwrap();
    assert!(e.model().steps.iter().all(|s| s.0 <= 40));
    assert_eq!(tokens(&mut a).unwrap(), expected(&prompt(10, 1), 30));
    assert_eq!(tokens(&mut b).unwrap(), expected(&prompt(100, 2), 5));
    assert_empty(&mut e);
}

#[test]
fn admission_is_first_come_first_served_without_starvation() {
    let tok = tokenizer();
    // Room for two sequences at a time: the third waits for a slot, the big one is not skipped.
    let mut e = engine(&tok, 4096, cfg(64, 2));
    let streams: Vec<Events> = [(8, 20), (8, 20), (200, 4), (8, 4)]
        .iter()
        .enumerate()
        .map(|(i, &(len, n))| e.submit(gen(prompt(len, i as u32), n)).unwrap().1)
        .collect();
    let mut first_token_step = [None; 4];
    let mut step = 0;
    let mut streams = streams;
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); 4];
    while e.has_work() {
        e.step().unwrap();
        step += 1;
        for (i, s) in streams.iter_mut().enumerate() {
            while let Ok(ev) = s.try_recv() {
                if let Event::Token { token, .. } = ev {
                    first_token_step[i].get_or_insert(step);
                    got[i].push(token.id);
                }
            }
        }
        assert!(step < 500, "no progress");
    }
    let f: Vec<usize> = first_token_step.iter().map(|s| s.unwrap()).collect();
    // The long prompt is not overtaken by the short one behind it (they may finish their
    // prompts in the same step).
    assert!(
        f[2] <= f[3],
        "the long prompt was served before the later short one: {f:?}"
    );
    for (i, &(len, n)) in [(8, 20), (8, 20), (200, 4), (8, 4)].iter().enumerate() {
        assert_eq!(got[i], expected(&prompt(len, i as u32), n), "request {i}");
    }
    assert_empty(&mut e);
}

#[test]
fn kv_exhaustion_preempts_the_newest_and_it_resumes_with_the_same_tokens() {
    let tok = tokenizer();
    // 12 blocks of 16 tokens: three requests growing to ~100 tokens each cannot all fit.
    let mut e = engine(&tok, 160, cfg(256, 8));
    let reqs = [(30, 70), (30, 70), (30, 70)];
    let mut streams: Vec<Events> = reqs
        .iter()
        .enumerate()
        .map(|(i, &(len, n))| e.submit(gen(prompt(len, 10 + i as u32), n)).unwrap().1)
        .collect();
    let mut preempted = Vec::new();
    while e.has_work() {
        let r = e.step().unwrap();
        preempted.extend(r.preempted);
    }
    assert!(
        !preempted.is_empty(),
        "the cache was small enough to force preemption"
    );
    assert!(e.stats().scheduler.preemptions >= 1);
    for (i, (s, &(len, n))) in streams.iter_mut().zip(&reqs).enumerate() {
        assert_eq!(
            tokens(s).unwrap(),
            expected(&prompt(len, 10 + i as u32), n),
            "request {i}"
        );
    }
    assert_empty(&mut e);
}

#[test]
fn a_step_that_runs_nothing_commits_nothing() {
    let tok = tokenizer();
    let mut e = engine(&tok, 4096, cfg(64, 8));
    let (_, mut a) = e.submit(gen(prompt(20, 1), 3)).unwrap();
    e.run_until_idle().unwrap();
    // The last step's rows belonged to a sequence that is gone now: idle steps must not
    // record them again.
    for _ in 0..3 {
        let r = e.step().unwrap();
        assert_eq!((r.tokens, r.ran.len()), (0, 0));
    }
    let (_, mut b) = e.submit(gen(prompt(20, 1), 3)).unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(tokens(&mut a).unwrap(), expected(&prompt(20, 1), 3));
    assert_eq!(tokens(&mut b).unwrap(), expected(&prompt(20, 1), 3));
    assert_empty(&mut e);
}

#[test]
fn a_request_that_can_never_fit_is_refused_up_front_with_the_numbers() {
    let tok = tokenizer();
    let mut e = engine(&tok, 64, cfg(64, 8));
    // `kv_tokens` 64: 4 blocks of 16, nothing added.
    let err = e.submit(gen(prompt(50, 1), 200)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::TooLarge(_)), "{msg}");
    assert!(
        msg.contains("250") && msg.contains("capacity of 64"),
        "{msg}"
    );
    let err = e.submit(gen(prompt(4000, 1), 200)).unwrap_err();
    assert!(err.to_string().contains("4096"), "{err}");
    assert!(!e.has_work());
}

#[test]
fn abort_and_dropped_streams_free_every_block_within_a_step() {
    let tok = tokenizer();
    let mut e = engine(&tok, 1024, cfg(64, 8));
    let (a, mut sa) = e.submit(gen(prompt(40, 1), 50)).unwrap();
    let (_, sb) = e.submit(gen(prompt(40, 2), 50)).unwrap();
    let (_, mut sc) = e.submit(gen(prompt(20, 3), 10)).unwrap();
    e.step().unwrap();
    e.step().unwrap();
    assert!(e.used_blocks() > 0);
    e.abort(a).unwrap();
    assert!(matches!(sa.try_recv(), Ok(Event::Token { .. })));
    let last = std::iter::from_fn(|| sa.try_recv().ok()).last();
    assert!(matches!(last, Some(Event::Error(Error::Aborted(_)))));
    // A stale id is an error, not another request's business.
    assert!(matches!(e.abort(a), Err(Error::UnknownRequest(_))));
    drop(sb);
    let r = e.step().unwrap();
    assert_eq!(
        r.finished.len(),
        1,
        "the dropped stream's request ended at once"
    );
    e.run_until_idle().unwrap();
    assert_eq!(tokens(&mut sc).unwrap(), expected(&prompt(20, 3), 10));
    assert_empty(&mut e);
}

#[test]
fn prefix_hits_reuse_blocks_and_idle_blocks_are_evicted_lru() {
    let tok = tokenizer();
    // 9 blocks of 16: just room for one long request.
    let mut e = engine(&tok, 144, cfg(512, 1));
    let shared = prompt(70, 5);
    let (_, mut a) = e.submit(gen(shared.clone(), 4)).unwrap();
    e.run_until_idle().unwrap();
    let computed = e.model().steps.iter().map(|s| s.0).sum::<usize>();
    assert_eq!(computed, 70 + 3);
    // The same prompt plus more: the 4 full blocks (64 tokens) come from the cache.
    let mut longer = shared.clone();
    longer.extend(prompt(10, 6));
    let (_, mut b) = e.submit(gen(longer.clone(), 4)).unwrap();
    e.run_until_idle().unwrap();
    let after = e.model().steps.iter().map(|s| s.0).sum::<usize>();
    assert_eq!(after - computed, 80 - 64 + 3, "only the uncached tail ran");
    assert_eq!(tokens(&mut a).unwrap(), expected(&shared, 4));
    assert_eq!(tokens(&mut b).unwrap(), expected(&longer, 4));
    let p = e.stats().prefix;
    assert_eq!((p.queried_tokens, p.hit_tokens), (150, 64));
    // An exact repeat still computes its last token.
    let (_, mut c) = e.submit(gen(shared[..64].to_vec(), 2)).unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(tokens(&mut c).unwrap(), expected(&shared[..64], 2));
    assert_eq!(e.stats().prefix.hit_tokens, 64 + 63);
    // Unrelated prompts fill the cache: the idle blocks are evicted, oldest first, and a
    // request that needs the room still runs.
    let big = prompt(130, 9);
    let (_, mut d) = e.submit(gen(big.clone(), 10)).unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(tokens(&mut d).unwrap(), expected(&big, 10));
    let (_, mut f) = e.submit(gen(shared.clone(), 2)).unwrap();
    e.run_until_idle().unwrap();
    assert_eq!(tokens(&mut f).unwrap(), expected(&shared, 2));
    assert_eq!(
        e.stats().prefix.hit_tokens,
        64 + 63,
        "the old prefix was evicted"
    );
    assert_empty(&mut e);
}

#[test]
fn n_samples_fork_the_prompt_instead_of_recomputing_it() {
    let tok = tokenizer();
    let mut e = engine(&tok, 1024, cfg(512, 8));
    let p = prompt(40, 3);
    let req = Request {
        n: 4,
        ..Request::new(p.clone(), SamplingParams::default(), 6)
    };
    let (_, mut s) = e.submit(Task::Generate(req)).unwrap();
    e.run_until_idle().unwrap();
    // The prompt once, then 4 rows per step for the 5 later tokens.
    let rows: Vec<usize> = e.model().steps.iter().map(|s| s.0).collect();
    assert_eq!(rows, [40, 4, 4, 4, 4, 4]);
    let mut per: Vec<Vec<u32>> = vec![Vec::new(); 4];
    while let Ok(ev) = s.try_recv() {
        if let Event::Token { index, token } = ev {
            per[index].push(token.id);
        }
    }
    for toks in &per {
        assert_eq!(toks, &expected(&p, 6));
    }
    assert_empty(&mut e);
}

#[test]
fn scoring_is_chunked_within_the_logit_row_budget() {
    let tok = tokenizer();
    let mut e = engine(&tok, 1024, cfg(512, 8));
    let ids = prompt(300, 4);
    let (_, mut s) = e
        .submit(Task::Score(ScoreRequest {
            overflow: Default::default(),
            ids: ids.clone(),
            from: 100,
        }))
        .unwrap();
    e.run_until_idle().unwrap();
    assert!(e.model().steps.iter().all(|s| s.1 <= 64));
    let Ok(Event::Scored(nll)) = s.try_recv() else {
        panic!("no score")
    };
    assert_eq!(nll.len(), 199);
    assert_empty(&mut e);
}

#[test]
fn bad_input_is_refused_and_nan_logits_fail_no_one_else() {
    let tok = tokenizer();
    let mut e = engine(&tok, 1024, cfg(64, 8));
    for (task, what) in [
        (gen(vec![], 4), "empty"),
        (gen(vec![5, 96], 4), "outside the vocabulary"),
        (gen(vec![5], 0), "max_tokens"),
    ] {
        let err = e.submit(task).unwrap_err();
        assert!(err.is_client_error(), "{err}");
        assert!(err.to_string().contains(what), "{err}");
    }
    let bad = Request {
        sampling: SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        },
        ..Request::new(vec![5, 6], SamplingParams::default(), 4)
    };
    assert!(e.submit(Task::Generate(bad)).is_err());
    // NaN logits with every sampler combination still yield tokens, not a panic.
    e.model_mut().nan_from = Some(0);
    let mut streams = Vec::new();
    for (t, k, p, mp) in [
        (0.0, 0, 1.0, 0.0),
        (0.8, 5, 0.9, 0.1),
        (1.0, 0, 1.0, 0.2),
        (0.7, 0, 0.5, 0.0),
    ] {
        let sampling = SamplingParams {
            temperature: t,
            top_k: k,
            top_p: p,
            min_p: mp,
            top_logprobs: 3,
            ..Default::default()
        };
        streams.push(
            e.submit(Task::Generate(Request::new(prompt(10, 1), sampling, 5)))
                .unwrap()
                .1,
        );
    }
    e.run_until_idle().unwrap();
    for s in &mut streams {
        // Garbage rows may well pick an end-of-generation token: a short answer, not a panic.
        let t = tokens(s).unwrap();
        assert!(!t.is_empty() && t.len() <= 5);
        assert!(t.iter().all(|&id| (id as usize) < VOCAB));
    }
    assert_empty(&mut e);
}

#[test]
fn a_full_waiting_queue_turns_new_requests_away_until_it_drains() {
    let tok = tokenizer();
    let mut e = engine(
        &tok,
        1024,
        SchedulerConfig {
            max_waiting: 2,
            ..cfg(64, 8)
        },
    );
    let (_, mut a) = e.submit(gen(prompt(8, 1), 3)).unwrap();
    let (_, mut b) = e.submit(gen(prompt(8, 2), 3)).unwrap();
    let err = e.submit(gen(prompt(8, 3), 3)).unwrap_err();
    assert!(matches!(err, Error::QueueFull(2)), "{err}");
    e.step().unwrap(); // both admitted: the queue has room again
    let (_, mut c) = e.submit(gen(prompt(8, 3), 3)).unwrap();
    e.run_until_idle().unwrap();
    for (s, salt) in [(&mut a, 1), (&mut b, 2), (&mut c, 3)] {
        assert_eq!(tokens(s).unwrap(), expected(&prompt(8, salt), 3));
    }
    assert_empty(&mut e);
}

#[test]
fn samples_that_stop_at_once_do_not_disturb_their_siblings() {
    let tok = tokenizer();
    let mut e = engine(&tok, 2048, cfg(512, 16));
    let p = prompt(20, 7);
    // The greedy token is a stop id: a sampled sample often stops on its first token.
    let stop = expected(&p, 1)[0];
    let req = Request {
        n: 8,
        stop_ids: vec![stop],
        ..Request::new(
            p,
            SamplingParams {
                temperature: 1.0,
                seed: 3,
                ..Default::default()
            },
            12,
        )
    };
    let (_, mut s) = e.submit(Task::Generate(req)).unwrap();
    e.run_until_idle().unwrap();
    let (mut tokens, mut finish) = (vec![Vec::new(); 8], vec![None; 8]);
    while let Ok(ev) = s.try_recv() {
        match ev {
            Event::Token { index, token } => {
                assert!(
                    finish[index].is_none(),
                    "a token for sample {index} after its finish"
                );
                tokens[index].push(token.id);
            }
            Event::Finished { index, reason } => finish[index] = Some(reason),
            _ => {}
        }
    }
    let first_stops = tokens.iter().filter(|t| t.len() == 1).count();
    assert!(
        first_stops > 0 && first_stops < 8,
        "the seed gives both kinds: {tokens:?}"
    );
    for (t, f) in tokens.iter().zip(&finish) {
        let stopped = t.last() == Some(&stop);
        assert_eq!(
            *f,
            Some(if stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            })
        );
        assert!(stopped || t.len() == 12, "{t:?}");
    }
    assert_empty(&mut e);
}

#[test]
fn drafts_run_only_on_budget_left_over_and_are_taken_back() {
    use crate::collapse::CollapseParams;
    let tok = tokenizer();
    let mut e = engine(&tok, 4096, cfg(40, 8));
    let motif = prompt(6, 3);
    let c_prompt: Vec<u32> = motif.iter().cycle().take(60).copied().collect();
    let mut req = Request::new(c_prompt.clone(), SamplingParams::default(), 60);
    req.collapse = Some(CollapseParams::jacobi(6));
    let (_, mut c) = e.submit(Task::Generate(req)).unwrap();
    for _ in 0..4 {
        e.step().unwrap();
    }
    let before = e.model().spans.len();
    let (_, mut b) = e.submit(gen(prompt(200, 2), 5)).unwrap();
    e.run_until_idle().unwrap();
    let spans = &e.model().spans;
    // While b's prompt fills the budget, c runs its one committed token and no guess.
    let crowded: Vec<&Vec<usize>> = spans[before..]
        .iter()
        .filter(|s| s.len() == 2 && s[1] > 1)
        .collect();
    assert!(crowded.len() >= 4, "{spans:?}");
    assert!(crowded.iter().all(|s| s[0] == 1), "{spans:?}");
    assert!(e.model().steps.iter().all(|s| s.0 <= 40));
    // Alone, after its 60-token prompt (two steps), it guessed.
    assert!(spans[2..before].iter().any(|s| s[0] > 1), "{spans:?}");
    assert_eq!(tokens(&mut c).unwrap(), expected(&c_prompt, 60));
    assert_eq!(tokens(&mut b).unwrap(), expected(&prompt(200, 2), 5));
    assert_empty(&mut e);
}

/// The order in which requests were first scheduled (their prompt's first run).
fn first_runs<T: std::ops::Deref<Target = Tokenizer>>(
    e: &mut Engine<Fake, T>,
) -> Vec<crate::engine::RequestId> {
    let mut order = Vec::new();
    while e.has_work() {
        for id in e.step().unwrap().ran {
            if !order.contains(&id) {
                order.push(id);
            }
        }
    }
    order
}

#[test]
fn lower_priority_values_are_admitted_first_and_fcfs_holds_among_equals() {
    let tok = tokenizer();
    // One sequence at a time: admission order is the order of the first runs.
    let mut e = engine(&tok, 4096, cfg(64, 1));
    let adm = |priority| super::Admission {
        priority,
        group: None,
    };
    let (a, _sa) = e.submit_with(gen(prompt(8, 1), 2), adm(0)).unwrap();
    e.step().unwrap(); // a runs
    let (b, _sb) = e.submit_with(gen(prompt(8, 2), 2), adm(5)).unwrap();
    let (c, _sc) = e.submit_with(gen(prompt(8, 3), 2), adm(0)).unwrap();
    let (d, _sd) = e.submit_with(gen(prompt(8, 4), 2), adm(-3)).unwrap();
    let (f, _sf) = e.submit_with(gen(prompt(8, 5), 2), adm(0)).unwrap();
    let order = first_runs(&mut e);
    assert_eq!(order, [a, d, c, f, b]);
    assert_empty(&mut e);
}

#[test]
fn a_big_group_takes_turns_with_a_small_one_that_came_after_it() {
    let tok = tokenizer();
    let mut e = engine(&tok, 4096, cfg(64, 1));
    let in_group = |group| super::Admission {
        priority: 0,
        group: Some(group),
    };
    let big: Vec<_> = (0..5)
        .map(|i| e.submit_with(gen(prompt(8, i), 2), in_group(1)).unwrap())
        .collect();
    let (small, _s) = e.submit_with(gen(prompt(8, 9), 2), in_group(2)).unwrap();
    let order = first_runs(&mut e);
    assert_eq!(order[..2], [big[0].0, small], "{order:?}");
    assert_eq!(order.len(), 6);
    assert_empty(&mut e);
}

#[test]
fn under_kv_pressure_the_lowest_priority_is_preempted_first() {
    let tok = tokenizer();
    // 11 blocks of 16: three requests that each grow to 4 blocks cannot all stay.
    let mut e = engine(&tok, 11 * 16, cfg(512, 8));
    let adm = |priority| super::Admission {
        priority,
        group: None,
    };
    let (hi, mut s_hi) = e.submit_with(gen(prompt(40, 1), 24), adm(-1)).unwrap();
    let (lo, mut s_lo) = e.submit_with(gen(prompt(40, 2), 24), adm(9)).unwrap();
    let (mid, mut s_mid) = e.submit_with(gen(prompt(40, 3), 24), adm(0)).unwrap();
    let mut preempted = Vec::new();
    while e.has_work() {
        preempted.extend(e.step().unwrap().preempted);
    }
    assert!(!preempted.is_empty(), "the cache was meant to run out");
    assert_eq!(preempted[0], lo, "{preempted:?}");
    assert!(
        !preempted.contains(&hi),
        "{preempted:?} (hi {hi}, mid {mid})"
    );
    assert_eq!(tokens(&mut s_hi).unwrap(), expected(&prompt(40, 1), 24));
    assert_eq!(tokens(&mut s_lo).unwrap(), expected(&prompt(40, 2), 24));
    assert_eq!(tokens(&mut s_mid).unwrap(), expected(&prompt(40, 3), 24));
    assert_empty(&mut e);
}

#[test]
fn the_waiting_queue_counts_sequences_not_requests() {
    let tok = tokenizer();
    let mut e = engine(
        &tok,
        4096,
        SchedulerConfig {
            max_waiting: 8,
            ..cfg(64, 4)
        },
    );
    let with_n = |n| {
        Task::Generate(Request {
            n,
            ..Request::new(prompt(8, 1), SamplingParams::default(), 2)
        })
    };
    // Bigger than the whole queue: it could never wait, so it is too large, not "busy".
    let err = e.submit(with_n(9)).unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    assert!(err.to_string().contains("9 sequences"), "{err}");
    let _a = e.submit(with_n(6)).unwrap();
    let err = e.submit(with_n(3)).unwrap_err();
    assert!(matches!(err, Error::QueueFull(6)), "{err}");
    let _b = e.submit(with_n(2)).unwrap();
    e.run_until_idle().unwrap();
    assert_empty(&mut e);
}

#[test]
fn a_new_group_gets_a_running_slot_from_the_group_that_holds_the_most() {
    let tok = tokenizer();
    let mut e = engine(&tok, 4096, cfg(64, 2));
    let in_group = |group| super::Admission {
        priority: 0,
        group: Some(group),
    };
    let mut big: Vec<_> = (0..4)
        .map(|i| e.submit_with(gen(prompt(8, i), 20), in_group(1)).unwrap())
        .collect();
    let first = e.step().unwrap();
    assert_eq!(first.ran, [big[0].0, big[1].0]);
    let (small, mut s) = e.submit_with(gen(prompt(8, 9), 3), in_group(2)).unwrap();
    let second = e.step().unwrap();
    assert_eq!(
        second.preempted,
        [big[1].0],
        "the big group's newest gives way"
    );
    assert!(second.ran.contains(&small), "{:?}", second.ran);
    e.run_until_idle().unwrap();
    assert_eq!(tokens(&mut s).unwrap(), expected(&prompt(8, 9), 3));
    for (i, (_, events)) in big.iter_mut().enumerate() {
        assert_eq!(tokens(events).unwrap(), expected(&prompt(8, i as u32), 20));
    }
    assert_empty(&mut e);
}

#[test]
fn a_preempted_score_request_scores_each_token_once() {
    let tok = tokenizer();
    let ids = prompt(300, 4);
    let score = || {
        Task::Score(ScoreRequest {
            ids: ids.clone(),
            from: 10,
            overflow: Default::default(),
        })
    };
    let nll_of = |s: &mut Events| loop {
        match s.try_recv() {
            Ok(Event::Scored(v)) => break v,
            Ok(_) => continue,
            Err(_) => panic!("no score"),
        }
    };
    let mut alone = engine(&tok, 1024, cfg(64, 8));
    let (_, mut s) = alone.submit(score()).unwrap();
    alone.run_until_idle().unwrap();
    let want = nll_of(&mut s);
    assert_eq!(want.len(), 289);
    // A long generation admitted first outgrows the cache: the score request, admitted after
    // it, gives its blocks back and recomputes its text.
    let mut e = engine(&tok, 512, cfg(16, 8));
    let (_, _g) = e.submit(gen(prompt(200, 1), 300)).unwrap();
    for _ in 0..20 {
        e.step().unwrap();
    }
    let (_, mut s) = e.submit(score()).unwrap();
    e.run_until_idle().unwrap();
    assert!(e.stats().scheduler.preemptions >= 1);
    assert_eq!(nll_of(&mut s), want);
}
