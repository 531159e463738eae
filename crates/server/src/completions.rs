//! `POST /v1/completions`: each prompt (text, token ids, or a list of either) becomes one
//! engine request with `n` samples; `reply` answers them together. Parsing and tokenizing run
//! off the async executor, after the sizes that bound that work (prompt count × `n`, text
//! bytes) are checked. `echo` puts each prompt's text before its choices' text; `best_of` may
//! only equal `n` (everett does not rank extra candidates) and `suffix` is refused.

use crate::error::ApiError;
use crate::reply::{self, Shape};
use crate::wire::{count, off_executor, parse_fields, prompt_ids, Common, MAX_LOGPROBS};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use everett_engine::generate::Request;
use serde::Deserialize;
use std::sync::atomic::Ordering;

/// Most prompts in one request.
const MAX_PROMPTS: usize = 256;

/// The fields of a completion request besides `Common`'s.
const FIELDS: &[&str] = &["prompt", "logprobs", "echo", "best_of", "suffix"];

/// Prompts as OpenAI accepts them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Prompt,
    logprobs: Option<i64>,
    #[serde(default)]
    echo: bool,
    best_of: Option<i64>,
    suffix: Option<String>,
    #[serde(flatten)]
    common: Common,
}

/// What the handler submits, made off the executor.
struct Prepared {
    reqs: Vec<Request>,
    /// Each prompt's text when `echo` asks for it.
    echo: Option<Vec<String>>,
}

impl CompletionRequest {
    /// The fields that cost nothing to check, before any prompt is tokenized.
    fn check(&self, st: &AppState) -> Result<(), ApiError> {
        self.common.check_model(st)?;
        let n = count("n", self.common.n, 1, 1, i64::MAX)?;
        if let Some(b) = self.best_of {
            if b != n as i64 {
                return Err(ApiError::invalid(
                    "best_of",
                    format!("`best_of` ({b}) must equal `n` ({n}): ranking extra candidates is not supported"),
                ));
            }
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid(
                "suffix",
                "`suffix` (insertion) is not supported",
            ));
        }
        if self.echo && self.logprobs.is_some() {
            return Err(ApiError::invalid(
                "echo",
                "`echo` with `logprobs` (prompt logprobs) is not supported; ask for one of them",
            ));
        }
        let (prompts, bytes) = match &self.prompt {
            Prompt::Text(t) => (1, t.len()),
            Prompt::Ids(_) => (1, 0),
            Prompt::Texts(t) => (t.len(), t.iter().map(String::len).sum()),
            Prompt::IdLists(l) => (l.len(), 0),
        };
        if prompts == 0 || prompts > MAX_PROMPTS {
            return Err(ApiError::invalid(
                "prompt",
                format!("send 1..={MAX_PROMPTS} prompts, not {prompts}"),
            ));
        }
        let lim = &st.cfg.limits;
        lim.check_seqs(
            prompts.saturating_mul(n),
            &format!("{prompts} prompts × n={n}"),
        )?;
        lim.check_bytes(bytes, "prompt")
    }

    /// The engine requests, one per prompt, checked for what the engine cannot know (the
    /// wire's own ranges).
    fn prepare(&self, st: &AppState) -> Result<Prepared, ApiError> {
        self.check(st)?;
        let encode = |t: &String| prompt_ids(st, t);
        let prompts: Vec<Vec<u32>> = match &self.prompt {
            Prompt::Text(t) => vec![encode(t)],
            Prompt::Ids(ids) => vec![ids.clone()],
            Prompt::Texts(t) => t.iter().map(encode).collect(),
            Prompt::IdLists(l) => l.clone(),
        };
        let echo = self.echo.then(|| match &self.prompt {
            Prompt::Text(t) => vec![t.clone()],
            Prompt::Texts(t) => t.clone(),
            // Token prompts echo as text; a BOS the client sent stays out of it, as it would
            // be out of a text prompt.
            Prompt::Ids(_) | Prompt::IdLists(_) => {
                prompts.iter().map(|p| st.cfg.tokenizer.decode(p)).collect()
            }
        });
        let top = self.logprobs.is_some().then_some(count(
            "logprobs",
            self.logprobs,
            0,
            0,
            MAX_LOGPROBS,
        )?);
        let constraint = self.common.constraint(st)?;
        let reqs = prompts
            .into_iter()
            .map(|ids| self.common.request(st, ids, top, None, constraint.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Prepared { reqs, echo })
    }
}

pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let state = st.clone();
    let (req, prepared) = off_executor(move || {
        let req: CompletionRequest = parse_fields(&state, &body, "completion request", FIELDS)?;
        let prepared = req.prepare(&state)?;
        Ok((req, prepared))
    })
    .await?;
    let group = st.groups.fetch_add(1, Ordering::Relaxed);
    reply::submit(
        &st,
        reply::Submission {
            shape: Shape::Completion,
            reqs: prepared.reqs,
            admission: req.common.admission(group),
            logprobs: req.logprobs.is_some(),
            stream: req.common.stream_mode(),
            echo: prepared.echo,
            reasoning: None,
            tools: None,
        },
    )
    .await
}
