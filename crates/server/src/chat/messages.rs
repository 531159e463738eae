//! A chat request's `messages`, checked and turned into what templates read: `role`, `content`
//! (text parts joined), and an assistant's `tool_calls` (their `arguments` JSON text parsed
//! into an object, as Hugging Face templates expect) or a tool result's `tool_call_id` and
//! `name`. The count and the text's bytes are checked against the server's limits first.

use crate::error::ApiError;
use crate::Limits;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
pub struct Message {
    role: String,
    /// Absent or null for an assistant turn that only calls tools.
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<CallIn>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// A call an assistant turn made, as the client sends it back.
#[derive(Deserialize)]
pub struct CallIn {
    id: Option<String>,
    function: FunctionIn,
}

#[derive(Deserialize)]
pub struct FunctionIn {
    name: String,
    /// A JSON text (OpenAI's form); an object is taken as well.
    arguments: Value,
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

impl Message {
    fn bytes(&self) -> usize {
        let text = match &self.content {
            None => 0,
            Some(Content::Text(t)) => t.len(),
            Some(Content::Parts(p)) => p
                .iter()
                .filter_map(|p| p.text.as_ref())
                .map(String::len)
                .sum(),
        };
        let calls: usize = self
            .tool_calls
            .iter()
            .flatten()
            .map(|c| c.function.name.len() + c.function.arguments.to_string().len())
            .sum();
        text + calls
    }

    /// The text of `content` (`None` when it was absent or null).
    fn text(&self, i: usize) -> Result<Option<String>, ApiError> {
        Ok(match &self.content {
            None => None,
            Some(Content::Text(t)) => Some(t.clone()),
            Some(Content::Parts(parts)) => Some(
                parts
                    .iter()
                    .map(|p| match (&*p.kind, &p.text) {
                        ("text", Some(t)) => Ok(t.as_str()),
                        _ => Err(ApiError::invalid(
                            format!("messages[{i}].content"),
                            format!(
                                "message {i}: only text parts are supported, not `{}`",
                                p.kind
                            ),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
            ),
        })
    }

    /// The message as templates read it.
    fn to_value(&self, i: usize) -> Result<Value, ApiError> {
        let field = |f: &str| format!("messages[{i}].{f}");
        if !ROLES.contains(&self.role.as_str()) {
            return Err(ApiError::invalid(
                field("role"),
                format!("message {i} has the unknown role `{}`", self.role),
            ));
        }
        let text = self.text(i)?;
        let calls = self.tool_calls.as_deref().filter(|c| !c.is_empty());
        if text.is_none() && calls.is_none() {
            return Err(ApiError::invalid(
                field("content"),
                format!("message {i} has no `content`"),
            ));
        }
        let mut m = json!({"role": self.role, "content": text});
        if let Some(calls) = calls {
            if self.role != "assistant" {
                return Err(ApiError::invalid(
                    field("tool_calls"),
                    format!("message {i}: only assistant messages carry `tool_calls`"),
                ));
            }
            let calls = calls
                .iter()
                .enumerate()
                .map(|(k, c)| c.to_value(&format!("messages[{i}].tool_calls[{k}]")))
                .collect::<Result<Vec<_>, _>>()?;
            m["tool_calls"] = Value::Array(calls);
        }
        if self.role == "tool" {
            let Some(id) = &self.tool_call_id else {
                return Err(ApiError::invalid(
                    field("tool_call_id"),
                    format!("message {i}: a `tool` message needs the `tool_call_id` it answers"),
                ));
            };
            m["tool_call_id"] = json!(id);
        }
        if let Some(name) = &self.name {
            m["name"] = json!(name);
        }
        Ok(m)
    }
}

impl CallIn {
    fn to_value(&self, field: &str) -> Result<Value, ApiError> {
        let arguments = match &self.function.arguments {
            Value::String(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("{field}.function.arguments"),
                        format!("`{field}.function.arguments` must be a JSON object's text"),
                    )
                })?,
            o @ Value::Object(_) => o.clone(),
            _ => {
                return Err(ApiError::invalid(
                    format!("{field}.function.arguments"),
                    format!("`{field}.function.arguments` must be a JSON object's text"),
                ))
            }
        };
        let mut v = json!({
            "type": "function",
            "function": {"name": self.function.name, "arguments": arguments},
        });
        if let Some(id) = &self.id {
            v["id"] = json!(id);
        }
        Ok(v)
    }
}

/// The messages as templates read them, the count and bytes checked first.
pub fn conversation(limits: &Limits, msgs: &[Message]) -> Result<Vec<Value>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty",
        ));
    }
    let most = limits.max_messages;
    if msgs.len() > most {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "{} messages; this server takes at most {most} per request",
                msgs.len()
            ),
        ));
    }
    limits.check_bytes(msgs.iter().map(Message::bytes).sum(), "messages")?;
    msgs.iter()
        .enumerate()
        .map(|(i, m)| m.to_value(i))
        .collect()
}
