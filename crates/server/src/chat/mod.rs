//! `POST /v1/chat/completions`: messages rendered into a prompt by the model's chat template
//! (`prompt`), then one engine request answered by `reply`. With `tools`, the template renders
//! them (or, for a template that knows no tool syntax, a system message describes them), the
//! reply's calls are read out in the template's format, and `tool_choice` `required` or a named
//! function is enforced with a grammar (`tools`). Parsing, rendering and tokenizing run off the
//! async executor, after the message count and the text's bytes are checked against the
//! server's limits.

mod messages;
mod prompt;

pub use prompt::{ChatTemplate, Conversation};

use crate::error::ApiError;
use crate::reasoning::Reasoning;
use crate::reply::{self, Shape};
use crate::structured::{self, Asked};
use crate::tools::{self, Format, Tools};
use crate::wire::{count, off_executor, parse_fields, Common, MAX_LOGPROBS};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use everett_engine::generate::Request;
use messages::Message;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<Message>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<i64>,
    max_completion_tokens: Option<i64>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<Value>,
    #[serde(flatten)]
    common: Common,
}

/// The fields of a chat request besides `Common`'s.
const FIELDS: &[&str] = &[
    "messages",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// A chat request made ready to run: its conversation for the template and its tools.
struct Prepared {
    conv: Conversation,
    /// The tools, when the model may call one.
    tools: Option<Tools>,
    format: Format,
}

/// The request's conversation and tools, for the served template.
fn prepare<'s>(
    st: &'s AppState,
    req: &ChatRequest,
) -> Result<(Prepared, &'s ChatTemplate), ApiError> {
    let mut messages = messages::conversation(&st.cfg.limits, &req.messages)?;
    let tools = Tools::from_request(
        req.tools.as_ref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls.as_ref(),
    )?
    .filter(Tools::active);
    let Some(template) = &st.cfg.chat_template else {
        return Err(ApiError::invalid(
            "messages",
            "this model has no chat template; use /v1/completions",
        ));
    };
    let format = template.tool_format();
    let mut conv_tools = None;
    if format == Format::Generic {
        // The template knows no tool syntax: calls and results become text, and the tools
        // are described in a system message of ours.
        tools::generic_history(&mut messages);
        if let Some(t) = &tools {
            let prompt = t.generic_prompt();
            match messages.first_mut() {
                Some(m) if m["role"] == "system" => {
                    let text = m["content"].as_str().unwrap_or("");
                    m["content"] = json!(format!("{text}\n\n{prompt}").trim_start().to_string());
                }
                _ => messages.insert(0, json!({"role": "system", "content": prompt})),
            }
        }
    } else if let Some(t) = &tools {
        conv_tools = Some(t.raw.clone());
    }
    Ok((
        Prepared {
            conv: Conversation {
                messages,
                tools: conv_tools,
            },
            tools,
            format,
        },
        template,
    ))
}

/// `POST /apply-template` (llama-server's route): `{"prompt": …}`, the text a chat request with
/// this body would run (before BOS is added).
pub async fn apply_template(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    off_executor(move || {
        let req: ChatRequest = parse_fields(&st, &body, "chat request", FIELDS)?;
        let (p, template) = prepare(&st, &req)?;
        let (prompt, _) = template
            .prompt_text(&st.cfg.tokenizer, &p.conv)
            .map_err(|e| ApiError::invalid("messages", e))?;
        Ok(axum::Json(serde_json::json!({ "prompt": prompt })))
    })
    .await
}

/// The engine request of a chat request, how its reply's thought is split off, and the tool
/// format its reply is read in (when it may call tools).
fn engine_request(
    st: &AppState,
    req: &ChatRequest,
) -> Result<(Request, Option<Reasoning>, Option<Format>), ApiError> {
    req.common.check_model(st)?;
    let n = count("n", req.common.n, 1, 1, i64::MAX)?;
    st.cfg.limits.check_seqs(n, &format!("n={n}"))?;
    let (p, template) = prepare(st, req)?;
    let (ids, reasoning) = template
        .prompt(&st.cfg.tokenizer, &p.conv)
        .map_err(|e| ApiError::invalid("messages", e))?;
    let top = if req.logprobs {
        Some(count("top_logprobs", req.top_logprobs, 0, 0, MAX_LOGPROBS)?)
    } else {
        None
    };
    let asked = req.common.structured.asked()?;
    let forced = p
        .tools
        .as_ref()
        .and_then(|t| t.constraint(p.format, &st.cfg.tokenizer));
    let constraint = match (asked, forced) {
        (Some(a), Some(_)) => {
            return Err(ApiError::invalid(
                &a.field,
                format!(
                    "`{}` cannot be combined with tool calls that are constrained (tool_choice required or a named function, or a model without a tool format); send tool_choice \"none\" or drop it",
                    a.field
                ),
            ))
        }
        (Some(a), None) => Some(structured::compile(st, &a)?),
        (None, Some(c)) => Some(structured::compile(
            st,
            &Asked {
                field: "tools".into(),
                constraint: c,
            },
        )?),
        (None, None) => None,
    };
    let engine_req = req
        .common
        .request(st, ids, top, req.max_completion_tokens, constraint)?;
    Ok((engine_req, reasoning, p.tools.map(|_| p.format)))
}

pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let state = st.clone();
    let (req, engine_req, reasoning, tools) = off_executor(move || {
        let req: ChatRequest = parse_fields(&state, &body, "chat request", FIELDS)?;
        let (engine_req, reasoning, tools) = engine_request(&state, &req)?;
        Ok((req, engine_req, reasoning, tools))
    })
    .await?;
    let group = st.groups.fetch_add(1, Ordering::Relaxed);
    reply::submit(
        &st,
        reply::Submission {
            shape: Shape::Chat,
            reqs: vec![engine_req],
            admission: req.common.admission(group),
            logprobs: req.logprobs,
            stream: req.common.stream_mode(),
            echo: None,
            reasoning,
            tools,
        },
    )
    .await
}
