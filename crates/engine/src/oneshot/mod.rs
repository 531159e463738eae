//! One-shot runs: a private engine for a few tasks, stepped to the end on the caller's thread,
//! for the command line and the tests (`generate_batch`, `explore`, `collapse`, perplexity's
//! scoring). They share `run`: it sizes nothing itself, submits every task, steps until all are
//! done and hands each event to the caller as it comes, ending at the first error. A server
//! instead submits to the one shared engine behind `engine::handle`.

mod collapsed;

pub use collapsed::Collapsed;

use crate::collapse::CollapseParams;
use crate::engine::{Engine, EngineConfig, Event, Events, ExploreRequest, Runner, Task};
use crate::error::{Error, Result};
use crate::generate::{kv_tokens_for, Request};
use crate::model::Model;
use crate::request::Output;
use crate::superposition::{Exploration, ExploreParams};
use crate::tokenizer::Tokenizer;
use std::time::Instant;

/// Runs `tasks` to completion on a private engine over `model` sized by `cfg`; `on_event(i, e)`
/// sees task `i`'s events in order, after each step. An error event, or an error from
/// `on_event`, ends the run with that error.
pub fn run<M: Runner>(
    model: M,
    tok: &Tokenizer,
    cfg: EngineConfig,
    tasks: Vec<Task>,
    mut on_event: impl FnMut(usize, Event) -> Result<()>,
) -> Result<()> {
    let mut engine = Engine::new(model, tok, cfg);
    let mut streams: Vec<Events> = Vec::with_capacity(tasks.len());
    for task in tasks {
        streams.push(engine.submit(task)?.1);
    }
    loop {
        let more = engine.has_work();
        if more {
            engine.step()?;
        }
        for (i, events) in streams.iter_mut().enumerate() {
            while let Ok(e) = events.try_recv() {
                if let Event::Error(err) = e {
                    return Err(err);
                }
                on_event(i, e)?;
            }
        }
        if !more {
            return Ok(());
        }
    }
}

/// Runs every request to completion on one engine; outputs in input order, one per sample
/// (request 0's samples first). The KV cache is sized so that nothing is preempted.
pub fn generate_batch(
    model: &mut Model,
    tok: &Tokenizer,
    reqs: Vec<Request>,
) -> Result<Vec<Output>> {
    let seqs: usize = reqs.iter().map(|r| r.n).sum();
    let cfg = EngineConfig {
        kv_tokens: kv_tokens_for(&reqs, model.config.context_length),
        ..EngineConfig::for_seqs(seqs.max(1))
    };
    let mut outs: Vec<Vec<Output>> = reqs
        .iter()
        .map(|r| {
            (0..r.n)
                .map(|_| Output::new(r.prompt_ids.clone()))
                .collect()
        })
        .collect();
    let tasks = reqs.into_iter().map(Task::Generate).collect();
    run(model, tok, cfg, tasks, |i, e| {
        if let Event::Token { index, .. } | Event::Finished { index, .. } = e {
            outs[i][index].absorb(&e, index);
        }
        Ok(())
    })?;
    Ok(outs.into_iter().flatten().collect())
}

/// Explores the futures of `prompt` (its ids include BOS when the model adds one) on a private
/// engine sized for the search. To explore beside other work, submit a `Task::Explore` to a
/// shared `Engine` instead.
pub fn explore(
    model: &mut Model,
    tok: &Tokenizer,
    prompt: &str,
    prompt_ids: &[u32],
    params: &ExploreParams,
) -> Result<Exploration> {
    let req = ExploreRequest {
        prompt: prompt.to_string(),
        prompt_ids: prompt_ids.to_vec(),
        params: params.clone(),
        constraint: None,
    };
    explore_request(model, tok, req)
}

/// As `explore`, for a whole request (a constraint on the paths, say).
pub fn explore_request(
    model: &mut Model,
    tok: &Tokenizer,
    req: ExploreRequest,
) -> Result<Exploration> {
    let cfg = EngineConfig {
        kv_tokens: req.kv_tokens(),
        ..EngineConfig::for_seqs(2 * req.params.width + 2)
    };
    let mut result = None;
    run(model, tok, cfg, vec![Task::Explore(req)], |_, e| {
        if let Event::Explored(x) = e {
            result = Some(*x);
        }
        Ok(())
    })?;
    result.ok_or_else(|| Error::Internal("the exploration ended without a result".into()))
}

/// Runs `req` (its `collapse` set, or the defaults) alone on `model`; `on_event` sees every
/// event as it comes (to stream the text).
pub fn collapse(
    model: &mut Model,
    tok: &Tokenizer,
    mut req: Request,
    mut on_event: impl FnMut(&Event),
) -> Result<Collapsed> {
    let params = *req.collapse.get_or_insert_with(CollapseParams::default);
    let cfg = EngineConfig {
        kv_tokens: kv_tokens_for(std::slice::from_ref(&req), model.config.context_length),
        ..EngineConfig::for_seqs(params.candidates)
    };
    let mut output = Output::new(req.prompt_ids.clone());
    let mut passes = Vec::new();
    let start = Instant::now();
    run(model, tok, cfg, vec![Task::Generate(req)], |_, e| {
        on_event(&e);
        match e {
            Event::CollapsePass(p) => passes.push(*p),
            e => {
                output.absorb(&e, 0);
            }
        }
        Ok(())
    })?;
    if output.finish_reason.is_none() {
        return Err(Error::Internal(
            "the collapse request ended unfinished".into(),
        ));
    }
    Ok(Collapsed {
        params,
        output,
        passes,
        wall_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}
