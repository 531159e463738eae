//! `POST /v1/chat/completions`: messages rendered into a prompt by the model's chat template,
//! then one engine request answered by `reply`. The template is the GGUF's
//! `tokenizer.chat_template` run by minijinja (with Python-style string methods, as Hugging Face
//! templates expect); a model without one gets its architecture's known format (Gemma's turn
//! markers for gemma3), and a model with neither is refused with a 400: messages are never
//! silently concatenated. Parsing, rendering and tokenizing run off the async executor, after
//! the message count and the text's bytes are checked against the server's limits.

use crate::error::ApiError;
use crate::reasoning::{Reasoning, Tags};
use crate::reply::{self, Shape};
use crate::template::Template;
use crate::wire::{count, off_executor, parse_fields, Common, MAX_LOGPROBS};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use everett_engine::tokenizer::Tokenizer;
use serde::Deserialize;
use std::sync::atomic::Ordering;

/// How messages become a prompt.
pub enum ChatTemplate {
    /// A Jinja template (from the GGUF), compiled once at start-up, and the thinking tags its
    /// source writes (a reasoning model's).
    Jinja(Box<Template>, Option<Tags>),
    /// Gemma's `<start_of_turn>role … <end_of_turn>` format.
    Gemma,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template as Hugging Face runs them (see `template`); a syntax
    /// error is reported here, at start-up.
    pub fn jinja(src: String) -> Result<Self, String> {
        let tags = Tags::of_template(&src);
        Template::new(src).map(|t| Self::Jinja(Box::new(t), tags))
    }

    /// The GGUF's template, else the architecture's known format, else none.
    pub fn choose(gguf: Option<String>, arch: &str) -> Result<Option<Self>, String> {
        match (gguf, arch) {
            (Some(t), _) => Self::jinja(t).map(Some),
            (None, "gemma3") => Ok(Some(Self::Gemma)),
            _ => Ok(None),
        }
    }

    /// The prompt tokens for `msgs` (role, content), ready for the model's answer; a template
    /// that fails says why.
    pub fn prompt_ids(
        &self,
        tok: &Tokenizer,
        msgs: &[(String, String)],
    ) -> Result<Vec<u32>, String> {
        self.prompt(tok, msgs).map(|p| p.0)
    }

    /// The prompt tokens for `msgs` and how the reply's thought is split off (`None` for a
    /// template without thinking tags).
    pub fn prompt(
        &self,
        tok: &Tokenizer,
        msgs: &[(String, String)],
    ) -> Result<(Vec<u32>, Option<Reasoning>), String> {
        let (text, bos) = self.prompt_text(tok, msgs)?;
        // A template that writes BOS itself must not get a second one.
        let add_bos = bos.is_empty() || !text.starts_with(&bos);
        let reasoning = match self {
            Self::Jinja(_, Some(tags)) => Some(Reasoning::for_prompt(*tags, &text)),
            _ => None,
        };
        Ok((tok.encode(&text, add_bos, true), reasoning))
    }

    /// The prompt text for `msgs` with the model's BOS and EOS texts, and the BOS text.
    pub fn prompt_text(
        &self,
        tok: &Tokenizer,
        msgs: &[(String, String)],
    ) -> Result<(String, String), String> {
        let special = |id: Option<u32>| id.map(|i| tok.piece(i).to_string()).unwrap_or_default();
        let (bos, eos) = (special(tok.bos), special(tok.eos));
        Ok((self.render(msgs, &bos, &eos)?, bos))
    }

    /// The prompt text for `msgs` (role, content), ready for the model's answer.
    fn render(&self, msgs: &[(String, String)], bos: &str, eos: &str) -> Result<String, String> {
        let Self::Jinja(t, _) = self else {
            return Ok(gemma(msgs));
        };
        let messages: Vec<_> = msgs
            .iter()
            .map(|(role, content)| minijinja::context! { role, content })
            .collect();
        t.render(minijinja::context! {
            messages, add_generation_prompt => true, bos_token => bos, eos_token => eos,
        })
    }
}

/// Gemma's format: the system message opens the first user turn; the assistant is `model`.
fn gemma(msgs: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut system = String::new();
    for (role, content) in msgs {
        match role.as_str() {
            "system" | "developer" => system = format!("{content}\n\n"),
            _ => {
                let who = if role == "assistant" { "model" } else { "user" };
                let text = if who == "user" {
                    std::mem::take(&mut system) + content
                } else {
                    content.clone()
                };
                out.push_str(&format!("<start_of_turn>{who}\n{text}<end_of_turn>\n"));
            }
        }
    }
    out + "<start_of_turn>model\n"
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<Message>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<i64>,
    max_completion_tokens: Option<i64>,
    #[serde(flatten)]
    common: Common,
}

/// The fields of a chat request besides `Common`'s.
const FIELDS: &[&str] = &[
    "messages",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
];

/// (role, text) of each message, checked, the count and the bytes first.
fn flatten(st: &AppState, msgs: &[Message]) -> Result<Vec<(String, String)>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let most = st.cfg.limits.max_messages;
    if msgs.len() > most {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "{} messages; this server takes at most {most} per request",
                msgs.len()
            ),
        ));
    }
    let bytes: usize = msgs
        .iter()
        .map(|m| match &m.content {
            Content::Text(t) => t.len(),
            Content::Parts(p) => p
                .iter()
                .filter_map(|p| p.text.as_ref())
                .map(String::len)
                .sum(),
        })
        .sum();
    st.cfg.limits.check_bytes(bytes, "messages")?;
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            if !["system", "developer", "user", "assistant"].contains(&m.role.as_str()) {
                return Err(ApiError::invalid(
                    "messages",
                    format!("message {i} has the unknown role `{}`", m.role),
                ));
            }
            let text = match &m.content {
                Content::Text(t) => t.clone(),
                Content::Parts(parts) => parts
                    .iter()
                    .map(|p| match (&*p.kind, &p.text) {
                        ("text", Some(t)) => Ok(t.as_str()),
                        _ => Err(ApiError::invalid(
                            "messages",
                            format!(
                                "message {i}: only text parts are supported, not `{}`",
                                p.kind
                            ),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
            };
            Ok((m.role.clone(), text))
        })
        .collect()
}

/// `POST /apply-template` (llama-server's route): `{"prompt": …}`, the text a chat request with
/// this body would run (before BOS is added).
pub async fn apply_template(
    State(st): State<AppState>,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    off_executor(move || {
        let req: ChatRequest = parse_fields(&st, &body, "chat request", FIELDS)?;
        let msgs = flatten(&st, &req.messages)?;
        let Some(template) = &st.cfg.chat_template else {
            return Err(ApiError::invalid(
                "messages",
                "this model has no chat template",
            ));
        };
        let (prompt, _) = template
            .prompt_text(&st.cfg.tokenizer, &msgs)
            .map_err(|e| ApiError::invalid("messages", e))?;
        Ok(axum::Json(serde_json::json!({ "prompt": prompt })))
    })
    .await
}

pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let state = st.clone();
    let (req, engine_req, reasoning) = off_executor(move || {
        let st = state;
        let req: ChatRequest = parse_fields(&st, &body, "chat request", FIELDS)?;
        req.common.check_model(&st)?;
        let n = count("n", req.common.n, 1, 1, i64::MAX)?;
        st.cfg.limits.check_seqs(n, &format!("n={n}"))?;
        let msgs = flatten(&st, &req.messages)?;
        let Some(template) = &st.cfg.chat_template else {
            return Err(ApiError::invalid(
                "messages",
                "this model has no chat template; use /v1/completions",
            ));
        };
        let (ids, reasoning) = template
            .prompt(&st.cfg.tokenizer, &msgs)
            .map_err(|e| ApiError::invalid("messages", e))?;
        let top = if req.logprobs {
            Some(count("top_logprobs", req.top_logprobs, 0, 0, MAX_LOGPROBS)?)
        } else {
            None
        };
        let constraint = req.common.constraint(&st)?;
        let engine_req =
            req.common
                .request(&st, ids, top, req.max_completion_tokens, constraint)?;
        Ok((req, engine_req, reasoning))
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
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_template_is_reported_at_start_up() {
        let err = ChatTemplate::jinja("{% for m in messages %}".into())
            .err()
            .unwrap();
        assert!(err.contains("does not compile"), "{err}");
        assert!(ChatTemplate::choose(None, "llama").unwrap().is_none());
        assert!(matches!(
            ChatTemplate::choose(None, "gemma3"),
            Ok(Some(ChatTemplate::Gemma))
        ));
    }

    #[test]
    fn gemma_turns_fold_the_system_message_into_the_first_user_turn() {
        let msgs: Vec<(String, String)> = [
            ("system", "Be brief."),
            ("user", "Hi"),
            ("assistant", "Hello!"),
            ("user", "Why?"),
        ]
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect();
        assert_eq!(
            gemma(&msgs),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
    }
}
