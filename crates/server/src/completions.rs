//! `POST /v1/completions`: the OpenAI wire format over one engine request. A prompt (text or
//! token ids) becomes a `Task::Generate` with `n` samples; the reply is either one JSON object or
//! an SSE stream of `text_completion` chunks ending in `data: [DONE]`. Validation errors are
//! answered before any stream starts, so a client sees a proper 400 either way. Dropping the
//! stream (a disconnected client) drops the event receiver, which cancels the request in the
//! engine. Chat completions and multi-prompt batches are not here yet.

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use everett_engine::engine::{Event, Events, Task};
use everett_engine::generate::{FinishReason, Request, TokenInfo};
use everett_engine::sample::SamplingParams;
use everett_engine::tokenizer::Tokenizer;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;

/// A prompt as OpenAI accepts it (one prompt per request here).
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: Prompt,
    max_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    n: Option<i64>,
    stop: Option<Stop>,
    seed: Option<u64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    logprobs: Option<i64>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    // vLLM's extensions.
    top_k: Option<i64>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    #[serde(default)]
    ignore_eos: bool,
}

/// Most alternatives per token that `logprobs` may ask for.
const MAX_LOGPROBS: i64 = 20;

fn count(param: &str, v: Option<i64>, default: i64, lo: i64, hi: i64) -> Result<usize, ApiError> {
    let v = v.unwrap_or(default);
    if v < lo || v > hi {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be in {lo}..={hi}, got {v}"),
        ));
    }
    Ok(v as usize)
}

impl CompletionRequest {
    /// The engine request, checked for what the engine cannot know (the wire's own ranges).
    fn to_request(&self, st: &AppState) -> Result<Request, ApiError> {
        if let Some(m) = &self.model {
            if *m != st.cfg.model_name {
                return Err(ApiError::not_found(
                    "model",
                    format!(
                        "the model `{m}` does not exist; this server serves `{}`",
                        st.cfg.model_name
                    ),
                ));
            }
        }
        let prompt_ids = match &self.prompt {
            Prompt::Text(t) => st.cfg.tokenizer.encode(t, true, false),
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Texts(t) if t.len() == 1 => st.cfg.tokenizer.encode(&t[0], true, false),
            Prompt::Texts(_) => {
                return Err(ApiError::invalid("prompt", "send one prompt per request"));
            }
        };
        let ctx = st.cfg.context as i64;
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: count("top_k", self.top_k.map(|k| k.max(0)), 0, 0, i64::MAX)?,
            min_p: self.min_p.unwrap_or(0.0),
            repeat_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.unwrap_or(0),
            top_logprobs: count("logprobs", self.logprobs, 0, 0, MAX_LOGPROBS)?,
            ..SamplingParams::default()
        };
        let stop_strings = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        Ok(Request {
            prompt_ids,
            sampling,
            max_tokens: count("max_tokens", self.max_tokens, 16, 1, ctx)?,
            stop_strings,
            stop_ids: Vec::new(),
            n: count(
                "n",
                self.n,
                1,
                1,
                everett_engine::generate::MAX_SAMPLES as i64,
            )?,
            ignore_eos: self.ignore_eos,
        })
    }
}

pub async fn create(State(st): State<AppState>, body: Bytes) -> Response {
    match run(st, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(st: AppState, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the request body is not a valid completion request: {e}"),
        )
    })?;
    let engine_req = req.to_request(&st)?;
    let meta = Meta {
        tok: st.cfg.tokenizer.clone(),
        id: String::new(),
        model: st.cfg.model_name.clone(),
        created: now(),
        prompt_tokens: engine_req.prompt_ids.len(),
        n: engine_req.n,
        logprobs: req.logprobs.is_some(),
    };
    let (id, mut events) = st.engine.submit(Task::Generate(engine_req));
    let meta = Meta {
        id: format!("cmpl-{id}"),
        ..meta
    };
    // The first event says whether the engine took the request.
    let first = match events.recv().await {
        Some(Event::Error(e)) => return Err(e.into()),
        Some(e) => e,
        None => return Err(everett_engine::Error::ShuttingDown.into()),
    };
    if req.stream {
        let usage = req.stream_options.unwrap_or_default().include_usage;
        Ok(stream_reply(meta, first, events, usage).into_response())
    } else {
        Ok(axum::Json(collect(meta, first, events).await?).into_response())
    }
}

/// What every reply of one request repeats.
struct Meta {
    tok: Arc<Tokenizer>,
    id: String,
    model: String,
    created: u64,
    prompt_tokens: usize,
    n: usize,
    logprobs: bool,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One choice being assembled.
#[derive(Default)]
struct Choice {
    text: String,
    tokens: Vec<TokenInfo>,
    finish: Option<FinishReason>,
}

fn logprobs_json(tok: &Tokenizer, tokens: &[TokenInfo], offset: usize) -> Value {
    let piece = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
    let mut at = offset;
    let mut offsets = Vec::new();
    for t in tokens {
        offsets.push(at);
        at += t.text.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| piece(t.id)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|&(id, lp)| (piece(id), json!(lp))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

fn usage(m: &Meta, completion: usize) -> Value {
    json!({
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": m.prompt_tokens + completion,
    })
}

async fn collect(m: Meta, first: Event, mut events: Events) -> Result<Value, ApiError> {
    let mut choices: Vec<Choice> = (0..m.n).map(|_| Choice::default()).collect();
    let mut next = Some(first);
    while let Some(e) = next {
        match e {
            Event::Token { index, token } => {
                choices[index].text.push_str(&token.text);
                choices[index].tokens.push(token);
            }
            Event::Finished { index, reason } => choices[index].finish = Some(reason),
            Event::Error(e) => return Err(e.into()),
            _ => {}
        }
        next = events.recv().await;
    }
    let completion: usize = choices.iter().map(|c| c.tokens.len()).sum();
    Ok(json!({
        "id": m.id,
        "object": "text_completion",
        "created": m.created,
        "model": m.model,
        "choices": choices.iter().enumerate().map(|(i, c)| json!({
            "index": i,
            "text": c.text,
            "logprobs": if m.logprobs { logprobs_json(&m.tok, &c.tokens, 0) } else { Value::Null },
            "finish_reason": c.finish.map(FinishReason::as_str),
        })).collect::<Vec<_>>(),
        "usage": usage(&m, completion),
    }))
}

/// Where a stream stands.
enum Phase {
    Events(Option<Event>),
    Done,
}

struct Streaming {
    m: Meta,
    events: Events,
    phase: Phase,
    include_usage: bool,
    /// Text already sent per choice (for `text_offset`), and tokens sent in all.
    sent: Vec<usize>,
    completion: usize,
}

fn chunk(m: &Meta, choice: Value) -> SseEvent {
    let v = json!({
        "id": m.id,
        "object": "text_completion",
        "created": m.created,
        "model": m.model,
        "choices": [choice],
    });
    SseEvent::default().data(v.to_string())
}

fn stream_reply(
    m: Meta,
    first: Event,
    events: Events,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let sent = vec![0; m.n];
    let state = Streaming {
        m,
        events,
        phase: Phase::Events(Some(first)),
        include_usage,
        sent,
        completion: 0,
    };
    Sse::new(stream::unfold(state, |mut s| async move {
        let pending = match &mut s.phase {
            Phase::Done => return None,
            Phase::Events(p) => p.take(),
        };
        let next = match pending {
            Some(e) => Some(e),
            None => s.events.recv().await,
        };
        s.phase = Phase::Events(None);
        let out = match next {
            Some(Event::Token { index, token }) => {
                let lp = if s.m.logprobs {
                    logprobs_json(&s.m.tok, std::slice::from_ref(&token), s.sent[index])
                } else {
                    Value::Null
                };
                s.sent[index] += token.text.len();
                s.completion += 1;
                chunk(
                    &s.m,
                    json!({"index": index, "text": token.text, "logprobs": lp, "finish_reason": null}),
                )
            }
            Some(Event::Finished { index, reason }) => chunk(
                &s.m,
                json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason.as_str()}),
            ),
            Some(Event::Error(e)) => {
                s.phase = Phase::Done;
                let e = crate::error::ApiError::from(e);
                SseEvent::default()
                    .data(json!({"error": {"message": e.message, "type": e.kind}}).to_string())
            }
            Some(_) => SseEvent::default().comment("ignored"),
            None => {
                s.phase = Phase::Done;
                if s.include_usage {
                    let v = json!({
                        "id": s.m.id, "object": "text_completion", "created": s.m.created,
                        "model": s.m.model, "choices": [], "usage": usage(&s.m, s.completion),
                    });
                    // The usage chunk, then [DONE] on the next poll.
                    s.include_usage = false;
                    s.phase = Phase::Events(None);
                    return Some((Ok(SseEvent::default().data(v.to_string())), s));
                }
                SseEvent::default().data("[DONE]")
            }
        };
        Some((Ok(out), s))
    }))
}
