//! Turning engine requests' events into one OpenAI reply, for completions and chat alike: one
//! JSON object, or an SSE stream of chunks ending in `data: [DONE]` (with a usage chunk first
//! when `stream_options.include_usage` asks). A reply may cover several engine requests (a list
//! of prompts): their events are merged, prompt `i`'s sample `j` becoming choice `i * n + j` as
//! OpenAI numbers them; the tokens of one collapse (lookahead) pass travel as one item, so a
//! stream sends them as one chunk. `submit` waits for every request's first event, so a request
//! the engine refuses is a plain HTTP error, never a broken stream. Dropping the stream (a
//! disconnected client) drops the event receivers, which cancels the requests in the engine.

use crate::error::ApiError;
use crate::metrics::{Metrics, Outcome};
use crate::reasoning::{Reasoning, Splitter};
use crate::tools::parse::{parse, Call, Parsed};
use crate::tools::stream::CallStream;
use crate::tools::Format;
use crate::AppState;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use everett_engine::engine::{Event, Events, Task};
use everett_engine::generate::{FinishReason, Request, TokenInfo};
use everett_engine::scheduler::Admission;
use everett_engine::tokenizer::Tokenizer;
use futures_util::stream::{self, BoxStream, SelectAll, Stream, StreamExt};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

/// Which OpenAI object the reply is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Completion,
    Chat,
}

/// What every reply of one request repeats.
pub struct Meta {
    shape: Shape,
    metrics: Arc<Metrics>,
    start: Instant,
    tok: Arc<Tokenizer>,
    id: String,
    model: String,
    created: u64,
    prompt_tokens: usize,
    n: usize,
    logprobs: bool,
    /// Each prompt's text, put before its choices' text (`echo`), and choices per prompt.
    echo: Option<Vec<String>>,
    per_prompt: usize,
    /// How a chat reply's thought is split from its content (reasoning models).
    reasoning: Option<Reasoning>,
    /// The format a chat reply's tool calls are read in, when it may call tools.
    tools: Option<Format>,
    /// Makes the reply's call ids unique (its engine id and the time it was made).
    call_seed: u64,
}

/// What a reply is made of: one request's events with choice indices made global, and the
/// tokens a collapse pass committed gathered into one item (so they go out as one chunk).
enum Item {
    Tokens {
        index: usize,
        tokens: Vec<TokenInfo>,
    },
    Finished {
        index: usize,
        reason: FinishReason,
    },
    /// The engine preempted one of the reply's requests (for the log line).
    Preempted,
    Error(everett_engine::Error),
}

/// The items of all of one reply's engine requests.
type Merged = SelectAll<BoxStream<'static, Item>>;

/// A request's next event — the first says whether the engine took it — or its error
/// (`ShuttingDown` when the stream ended instead) as the HTTP error.
pub async fn next_event(events: &mut Events) -> Result<Event, ApiError> {
    match events.recv().await {
        Some(Event::Error(e)) => Err(e.into()),
        Some(e) => Ok(e),
        None => Err(everett_engine::Error::ShuttingDown.into()),
    }
}

/// `events` (whose first event was `first`) as items whose choice indices start at `base`.
fn renumbered(first: Event, events: Events, base: usize) -> BoxStream<'static, Item> {
    stream::unfold(
        (events, Some(first)),
        move |(mut rx, mut held)| async move {
            let e = match held.take() {
                Some(e) => e,
                None => rx.recv().await?,
            };
            // `None`: nothing for the client (an event of another kind).
            let item = match e {
                Event::Token { index, token } => Some(Item::Tokens {
                    index: index + base,
                    tokens: vec![token],
                }),
                // A pass's tokens follow its record (fewer when the request stops inside it; the
                // event that ended it is kept for the next item). Collapse requests have one sample.
                Event::CollapsePass(p) => {
                    let mut tokens = Vec::with_capacity(p.accepted);
                    while tokens.len() < p.accepted {
                        match rx.recv().await {
                            Some(Event::Token { token, .. }) => tokens.push(token),
                            other => {
                                held = other;
                                break;
                            }
                        }
                    }
                    (!tokens.is_empty()).then_some(Item::Tokens {
                        index: base,
                        tokens,
                    })
                }
                Event::Finished { index, reason } => Some(Item::Finished {
                    index: index + base,
                    reason,
                }),
                Event::Error(e) => Some(Item::Error(e)),
                Event::Preempted => Some(Item::Preempted),
                _ => None,
            };
            Some((item, (rx, held)))
        },
    )
    .filter_map(|item| async move { item })
    .boxed()
}

/// One reply's engine requests and how to answer them.
pub struct Submission {
    pub shape: Shape,
    /// One per prompt, all with the same `n`.
    pub reqs: Vec<Request>,
    pub admission: Admission,
    pub logprobs: bool,
    /// `None`: one JSON reply; `Some(include_usage)`: a stream.
    pub stream: Option<bool>,
    /// Each prompt's text to put before its choices' text.
    pub echo: Option<Vec<String>>,
    /// Chat replies of a reasoning model: the thought goes to `reasoning_content`.
    pub reasoning: Option<Reasoning>,
    /// Chat replies that may call tools: their calls are read in this format.
    pub tools: Option<Format>,
}

/// Submits the requests and answers with their one reply.
pub async fn submit(st: &AppState, sub: Submission) -> Result<Response, ApiError> {
    let Submission {
        shape,
        reqs,
        admission,
        logprobs,
        stream,
        echo,
        reasoning,
        tools,
    } = sub;
    let prompt_tokens = reqs.iter().map(|r| r.prompt_ids.len()).sum();
    let samples: Vec<usize> = reqs.iter().map(|r| r.n).collect();
    let n = samples.iter().sum();
    let per_prompt = samples.first().copied().unwrap_or(1);
    let start = Instant::now();
    let mut submitted = Vec::with_capacity(reqs.len());
    for req in reqs {
        submitted.push(st.engine.submit_with(Task::Generate(req), admission));
    }
    let id = submitted.first().map_or(0, |(id, _)| id.0);
    let prefix = if shape == Shape::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let meta = Meta {
        shape,
        metrics: st.metrics.clone(),
        start,
        tok: st.cfg.tokenizer.clone(),
        id: format!("{prefix}-{id}"),
        model: st.cfg.model_name.clone(),
        created: created.as_secs(),
        prompt_tokens,
        n,
        logprobs,
        echo,
        per_prompt,
        reasoning,
        tools,
        call_seed: (id << 20) ^ created.as_nanos() as u64,
    };
    // The first event says whether the engine took a request; on any refusal, returning
    // drops the receivers, which cancels the requests it did take.
    let mut merged = Merged::new();
    let mut base = 0;
    for ((_, mut events), samples) in submitted.into_iter().zip(samples) {
        let first = next_event(&mut events).await?;
        merged.push(renumbered(first, events, base));
        base += samples;
    }
    Ok(match stream {
        Some(include_usage) => stream_reply(meta, merged, include_usage).into_response(),
        None => axum::Json(collect(meta, merged).await?).into_response(),
    })
}

impl Meta {
    /// The echoed prompt text that choice `index` starts with ("" without `echo`).
    fn echo_of(&self, index: usize) -> &str {
        self.echo
            .as_ref()
            .and_then(|e| e.get(index / self.per_prompt.max(1)))
            .map_or("", String::as_str)
    }

    /// A token's text as the reply reads it: in a reply that may call tools, a control token
    /// other than the end (`[TOOL_CALLS]`, `<|python_tag|>`) is written out for the parser.
    fn token_text<'a>(&self, t: &'a TokenInfo) -> Cow<'a, str> {
        let tok = &self.tok;
        if self.tools.is_some() && t.text.is_empty() && tok.is_control(t.id) && !tok.is_eog(t.id) {
            return Cow::Owned(tok.piece(t.id).to_string());
        }
        Cow::Borrowed(&t.text)
    }

    /// Choice `index`'s `tool_calls` (streamed ones number their calls).
    fn calls_json(&self, index: usize, calls: &[Call], streaming: bool) -> Value {
        let format = self.tools.unwrap_or(Format::Generic);
        calls
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let seed = self
                    .call_seed
                    .wrapping_add(((index as u64) << 16) + k as u64);
                let mut v = json!({
                    "id": format.call_id(seed),
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                });
                if streaming {
                    v["index"] = json!(k);
                }
                v
            })
            .collect()
    }

    fn route(&self) -> &'static str {
        match self.shape {
            Shape::Completion => "/v1/completions",
            Shape::Chat => "/v1/chat/completions",
        }
    }

    /// Records a reply that ended (every choice finished, or the client went away) in the
    /// metrics and the log: info when it completed, a warning when a choice was aborted.
    fn finished(&self, o: &Outcome, preempted: bool) {
        self.metrics.record(o);
        let aborted = o.reasons.contains(&"abort");
        let reasons = o.reasons.join(",");
        let ttft_ms = o.ttft.map(|t| (t * 1e3).round() as u64);
        let total_ms = (o.e2e * 1e3).round() as u64;
        let (id, route) = (self.id.as_str(), self.route());
        if aborted {
            tracing::warn!(id, route, prompt_tokens = o.prompt_tokens, output_tokens = o.generated,
                ttft_ms, total_ms, finish = %reasons, preempted, "request aborted by its client");
        } else {
            tracing::info!(id, route, prompt_tokens = o.prompt_tokens, output_tokens = o.generated,
                ttft_ms, total_ms, finish = %reasons, preempted, "request done");
        }
    }

    /// Logs a reply that failed inside the engine after it was accepted.
    fn log_failed(&self, e: &everett_engine::Error) {
        tracing::error!(id = self.id.as_str(), route = self.route(), error = %e, "request failed");
    }
}

fn piece(tok: &Tokenizer, id: u32) -> String {
    String::from_utf8_lossy(&tok.token_bytes(id)).into_owned()
}

/// The `logprobs` object of `tokens` (the first starting `offset` bytes into the choice's text).
fn logprobs_json(m: &Meta, tokens: &[TokenInfo], offset: usize) -> Value {
    if !m.logprobs {
        return Value::Null;
    }
    let tok = &m.tok;
    if m.shape == Shape::Chat {
        let entry = |id: u32, lp: f32| {
            let p = piece(tok, id);
            json!({"token": p, "logprob": lp, "bytes": p.as_bytes()})
        };
        let content: Vec<Value> = tokens
            .iter()
            .map(|t| {
                let mut e = entry(t.id, t.logprob);
                e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
                e
            })
            .collect();
        return json!({ "content": content });
    }
    let mut at = offset;
    let mut offsets = Vec::new();
    for t in tokens {
        offsets.push(at);
        at += t.text.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| piece(tok, t.id)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|&(id, lp)| (piece(tok, id), json!(lp))).collect::<serde_json::Map<_, _>>()
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

/// One choice being assembled.
#[derive(Default)]
struct Choice {
    text: String,
    tokens: Vec<TokenInfo>,
    finish: Option<FinishReason>,
}

async fn collect(m: Meta, mut events: Merged) -> Result<Value, ApiError> {
    let mut choices: Vec<Choice> = (0..m.n)
        .map(|i| Choice {
            text: m.echo_of(i).to_string(),
            ..Choice::default()
        })
        .collect();
    let mut first_at = None;
    let mut gaps = Gaps::default();
    let mut preempted = false;
    while let Some(item) = events.next().await {
        match item {
            Item::Tokens { index, tokens } => {
                first_at.get_or_insert_with(|| m.start.elapsed().as_secs_f64());
                gaps.tokens(&m.metrics, tokens.len());
                for token in tokens {
                    choices[index].text.push_str(&m.token_text(&token));
                    choices[index].tokens.push(token);
                }
            }
            Item::Finished { index, reason } => choices[index].finish = Some(reason),
            Item::Preempted => preempted = true,
            Item::Error(e) => {
                m.log_failed(&e);
                return Err(e.into());
            }
        }
    }
    let completion: usize = choices.iter().map(|c| c.tokens.len()).sum();
    let reasons: Vec<&str> = choices
        .iter()
        .map(|c| c.finish.map_or("abort", FinishReason::as_str))
        .collect();
    m.finished(
        &Outcome {
            prompt_tokens: m.prompt_tokens,
            generated: completion,
            ttft: first_at,
            e2e: m.start.elapsed().as_secs_f64(),
            reasons: &reasons,
        },
        preempted,
    );
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = json!({
                "index": i,
                "logprobs": logprobs_json(&m, &c.tokens, 0),
                "finish_reason": c.finish.map(FinishReason::as_str),
            });
            match m.shape {
                Shape::Completion => v["text"] = json!(c.text),
                Shape::Chat => {
                    let (thought, content) = match &m.reasoning {
                        Some(r) => r.split(&c.text),
                        None => (None, c.text.clone()),
                    };
                    let parsed = match m.tools {
                        Some(format) => parse(format, &content),
                        None => Parsed {
                            content,
                            calls: Vec::new(),
                        },
                    };
                    v["message"] = json!({"role": "assistant", "content": parsed.content});
                    if !parsed.calls.is_empty() {
                        if parsed.content.is_empty() {
                            v["message"]["content"] = Value::Null;
                        }
                        v["message"]["tool_calls"] = m.calls_json(i, &parsed.calls, false);
                        v["finish_reason"] = json!("tool_calls");
                    }
                    if let Some(t) = thought {
                        v["message"]["reasoning_content"] = json!(t);
                    }
                }
            }
            v
        })
        .collect();
    let object = match m.shape {
        Shape::Completion => "text_completion",
        Shape::Chat => "chat.completion",
    };
    Ok(json!({
        "id": m.id,
        "object": object,
        "created": m.created,
        "model": m.model,
        "choices": choices,
        "usage": usage(&m, completion),
    }))
}

/// Times the gaps between a reply's tokens (vLLM's inter-token latency; the first token's
/// wait is the time to first token instead).
#[derive(Default)]
struct Gaps {
    last: Option<Instant>,
}

impl Gaps {
    fn tokens(&mut self, metrics: &Metrics, count: usize) {
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            metrics.token_gap((now - last).as_secs_f64(), count);
        }
    }
}

struct Streaming {
    m: Meta,
    gaps: Gaps,
    preempted: bool,
    events: Merged,
    done: bool,
    include_usage: bool,
    /// Text bytes already sent per choice (for `text_offset`).
    sent: Vec<usize>,
    /// Whether a chat choice has named its role yet.
    started: Vec<bool>,
    /// Per choice, what splits a reasoning model's thought from its content.
    splitters: Vec<Option<Splitter>>,
    /// Per choice, what holds back and reads its tool calls.
    calls: Vec<Option<CallStream>>,
    /// Chunks to send before the next event's (a finish after its calls).
    pending: VecDeque<SseEvent>,
    completion: usize,
    first_at: Option<f64>,
    /// Each choice's finish reason once it came.
    reasons: Vec<Option<&'static str>>,
    recorded: bool,
}

impl Streaming {
    /// Records the request in the metrics once: at its end, or when the client went away.
    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let reasons: Vec<&str> = self.reasons.iter().map(|r| r.unwrap_or("abort")).collect();
        self.m.finished(
            &Outcome {
                prompt_tokens: self.m.prompt_tokens,
                generated: self.completion,
                ttft: self.first_at,
                e2e: self.m.start.elapsed().as_secs_f64(),
                reasons: &reasons,
            },
            self.preempted,
        );
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.record();
    }
}

impl Streaming {
    fn chunk(&self, choices: Value, usage: Option<Value>) -> SseEvent {
        let object = match self.m.shape {
            Shape::Completion => "text_completion",
            Shape::Chat => "chat.completion.chunk",
        };
        let mut v = json!({
            "id": self.m.id,
            "object": object,
            "created": self.m.created,
            "model": self.m.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        SseEvent::default().data(v.to_string())
    }

    /// One choice's piece of a chunk: new text (a chat's split into thought and content)
    /// and/or a finish reason.
    fn choice(&mut self, index: usize, text: &str, logprobs: Value, finish: Option<&str>) -> Value {
        let mut v = json!({"index": index, "logprobs": logprobs, "finish_reason": finish});
        if self.m.shape == Shape::Completion {
            // A completion choice's first piece starts with its echoed prompt.
            v["text"] = if self.started[index] {
                json!(text)
            } else {
                json!(format!("{}{text}", self.m.echo_of(index)))
            };
            return v;
        }
        let (thought, content) = match &mut self.splitters[index] {
            Some(s) if finish.is_some() => s.finish(),
            Some(s) => s.push(text),
            None => (String::new(), text.to_string()),
        };
        let (content, calls) = match &mut self.calls[index] {
            Some(cs) => {
                let mut out = cs.push(&content);
                let mut calls = Vec::new();
                if finish.is_some() {
                    let end = cs.finish();
                    out.push_str(&end.content);
                    calls = end.calls;
                }
                (out, calls)
            }
            None => (content, Vec::new()),
        };
        let mut delta = json!({});
        let says =
            finish.is_none() || !content.is_empty() || !thought.is_empty() || !calls.is_empty();
        if says && !self.started[index] {
            // The first piece of a chat choice names the role.
            delta["role"] = json!("assistant");
        }
        if finish.is_none() || !content.is_empty() {
            delta["content"] = json!(content);
        }
        if !thought.is_empty() {
            delta["reasoning_content"] = json!(thought);
        }
        if !calls.is_empty() {
            delta["tool_calls"] = self.m.calls_json(index, &calls, true);
            v["finish_reason"] = json!("tool_calls");
        }
        v["delta"] = delta;
        v
    }

    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        if let Some(chunk) = self.pending.pop_front() {
            return Some((Ok(chunk), self));
        }
        if self.done {
            return None;
        }
        // Text held back (a possible tool call) sends nothing: wait for the next event.
        let out = loop {
            break match self.events.next().await {
                Some(Item::Tokens { index, tokens }) => {
                    let text: String = tokens.iter().map(|t| self.m.token_text(t)).collect();
                    let lp = logprobs_json(&self.m, &tokens, self.sent[index]);
                    let c = self.choice(index, &text, lp, None);
                    let empty = c["logprobs"].is_null()
                        && c.get("delta").is_some_and(|d| *d == json!({"content": ""}));
                    self.sent[index] += text.len();
                    self.started[index] = true;
                    self.completion += tokens.len();
                    self.gaps.tokens(&self.m.metrics, tokens.len());
                    let start = self.m.start;
                    self.first_at
                        .get_or_insert_with(|| start.elapsed().as_secs_f64());
                    if empty {
                        continue;
                    }
                    self.chunk(json!([c]), None)
                }
                Some(Item::Finished { index, reason }) => {
                    self.reasons[index] = Some(reason.as_str());
                    let mut c = self.choice(index, "", Value::Null, Some(reason.as_str()));
                    self.started[index] = true;
                    if c["delta"].get("tool_calls").is_some() {
                        // The calls in one chunk, the finish in the next, as OpenAI sends them.
                        let end = json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"});
                        c["finish_reason"] = Value::Null;
                        let end = self.chunk(json!([end]), None);
                        self.pending.push_back(end);
                    }
                    self.chunk(json!([c]), None)
                }
                Some(Item::Preempted) => {
                    self.preempted = true;
                    SseEvent::default().comment("preempted")
                }
                Some(Item::Error(e)) => {
                    self.m.log_failed(&e);
                    // Nothing more of this reply: the next poll sends `[DONE]`, as vLLM does.
                    self.events = Merged::new();
                    self.include_usage = false;
                    let e = ApiError::from(e);
                    let v = json!({"error": {"message": e.message, "type": e.kind}});
                    SseEvent::default().data(v.to_string())
                }
                None => {
                    self.record();
                    if self.include_usage {
                        // The usage chunk now, [DONE] on the next poll.
                        self.include_usage = false;
                        let u = usage(&self.m, self.completion);
                        self.chunk(json!([]), Some(u))
                    } else {
                        self.done = true;
                        SseEvent::default().data("[DONE]")
                    }
                }
            };
        };
        Some((Ok(out), self))
    }
}

fn stream_reply(
    m: Meta,
    events: Merged,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state = Streaming {
        gaps: Gaps::default(),
        preempted: false,
        sent: vec![0; m.n],
        started: vec![false; m.n],
        splitters: (0..m.n).map(|_| m.reasoning.map(Splitter::new)).collect(),
        calls: (0..m.n).map(|_| m.tools.map(CallStream::new)).collect(),
        pending: VecDeque::new(),
        reasons: vec![None; m.n],
        first_at: None,
        recorded: false,
        m,
        events,
        done: false,
        include_usage,
        completion: 0,
    };
    Sse::new(stream::unfold(state, Streaming::next))
}
