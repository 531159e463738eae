//! Tool calling in chat completions, as OpenAI defines it: `tools` (functions with JSON-schema
//! parameters), `tool_choice` (`none`, `auto`, `required`, or one named function) and
//! `parallel_tool_calls`; calls come back as `message.tool_calls` (or streamed as
//! `delta.tool_calls`) with `finish_reason: "tool_calls"`. `parallel_tool_calls` is off unless
//! asked for, as llama-server has it: small models asked for "one or more" calls tend to repeat
//! the first until they run out of tokens.
//!
//! A model calls tools in the syntax its chat template teaches it; `Format` is that syntax,
//! read from the template (or named by `--tool-call-parser`). The template renders the tools
//! itself, and `parse` reads the calls out of the reply. A template that teaches no syntax we
//! know (or none at all) gets the generic format: the tools are described in a system message
//! written here, and every reply is constrained to one JSON object that either calls a tool
//! or answers. `required` and a named function are enforced with a grammar in every format
//! (`grammar`), so the call always parses, on any model.

pub mod grammar;
pub mod parse;
pub mod stream;

use crate::error::ApiError;
use everett_engine::constraint::Constraint;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// The syntax of a model's tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hermes 2 Pro / Qwen 2.5 / Qwen 3: `<tool_call>\n{"name", "arguments"}\n</tool_call>`.
    Hermes,
    /// Llama 3.1–3.3: the reply is `{"name", "parameters"}`.
    Llama3Json,
    /// Mistral: `[TOOL_CALLS][{"name", "arguments"}, …]`, or with `args` (Mistral Small 3.2,
    /// Devstral, Ministral 3) `[TOOL_CALLS]name[ARGS]{…}`.
    Mistral { args: bool },
    /// Ours, for every other template: a JSON object, a call or a `response`.
    Generic,
}

/// The names `--tool-call-parser` takes (vLLM's names where it has the format).
pub const FORMAT_NAMES: &[&str] = &["hermes", "llama3_json", "mistral", "generic"];

impl Format {
    /// The syntax a chat template's source teaches its model.
    pub fn of_template(src: &str) -> Self {
        if src.contains("[TOOL_CALLS]") {
            return Format::Mistral {
                args: src.contains("[ARGS]"),
            };
        }
        // Qwen3-Coder, GLM and others open calls with the same tag but write XML inside.
        let xml = ["<function=", "<arg_key>", "<invoke"]
            .iter()
            .any(|m| src.contains(m));
        if src.contains("<tool_call>") && src.contains("arguments") && !xml {
            return Format::Hermes;
        }
        if src.contains("<|start_header_id|>") && src.contains("\"parameters\"") {
            return Format::Llama3Json;
        }
        Format::Generic
    }

    /// The format `name` (one of `FORMAT_NAMES`); `mistral` takes its form from `template`.
    pub fn from_name(name: &str, template: Option<&str>) -> Result<Self, String> {
        Ok(match name {
            "hermes" => Format::Hermes,
            "llama3_json" => Format::Llama3Json,
            "mistral" => Format::Mistral {
                args: template.is_some_and(|t| t.contains("[ARGS]")),
            },
            "generic" => Format::Generic,
            other => {
                return Err(format!(
                    "unknown tool-call parser `{other}` (one of {})",
                    FORMAT_NAMES.join(", ")
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Hermes => "hermes",
            Format::Llama3Json => "llama3_json",
            Format::Mistral { .. } => "mistral",
            Format::Generic => "generic",
        }
    }

    /// A new call id: Mistral's templates want nine letters and digits; the others get
    /// OpenAI's `call_` form. `seed` makes it unique (the reply's id, choice and call).
    pub fn call_id(self, seed: u64) -> String {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        // splitmix64: consecutive seeds give unrelated ids.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let id: String = (0..9)
            .map(|i| ALNUM[((z >> (i * 7)) % ALNUM.len() as u64) as usize] as char)
            .collect();
        match self {
            Format::Mistral { .. } => id,
            _ => format!("call_{id}"),
        }
    }
}

/// One function a request offers.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// Its parameters' JSON schema (an empty object schema when none was given).
    pub parameters: Value,
}

/// What `tool_choice` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    None,
    Auto,
    Required,
    Named(String),
}

/// A request's tools, checked.
#[derive(Debug, Clone)]
pub struct Tools {
    pub functions: Vec<Function>,
    /// The `tools` list as sent: what chat templates read.
    pub raw: Value,
    pub choice: Choice,
    pub parallel: bool,
}

impl Tools {
    /// The request's `tools`, `tool_choice` and `parallel_tool_calls`; `None` when it offers
    /// no tools. Each mistake is a 400 naming its field.
    pub fn from_request(
        tools: Option<&Value>,
        choice: Option<&Value>,
        parallel: Option<&Value>,
    ) -> Result<Option<Self>, ApiError> {
        let list = match tools {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => return Err(ApiError::invalid("tools", "`tools` must be a list")),
        };
        let functions = list
            .iter()
            .enumerate()
            .map(|(i, t)| function(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, f) in functions.iter().enumerate() {
            if functions[..i].iter().any(|g| g.name == f.name) {
                return Err(ApiError::invalid(
                    format!("tools[{i}].function.name"),
                    format!("two tools are named `{}`", f.name),
                ));
            }
        }
        let choice = tool_choice(choice, &functions)?;
        let parallel = match parallel {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::invalid(
                    "parallel_tool_calls",
                    "`parallel_tool_calls` must be true or false",
                ))
            }
        };
        if functions.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            functions,
            raw: Value::Array(list.to_vec()),
            choice,
            parallel,
        }))
    }

    /// Whether the model may call a tool at all (`tool_choice` is not `none`).
    pub fn active(&self) -> bool {
        self.choice != Choice::None
    }

    /// The functions a call may name.
    fn callable(&self) -> Vec<&Function> {
        match &self.choice {
            Choice::Named(n) => self.functions.iter().filter(|f| &f.name == n).collect(),
            _ => self.functions.iter().collect(),
        }
    }

    /// The constraint the reply must meet: the generic format's JSON always; in the other
    /// formats a forced call for `required` and a named function, and nothing for `auto`.
    pub fn constraint(&self, format: Format, tok: &Tokenizer) -> Option<Constraint> {
        let forced = matches!(self.choice, Choice::Required | Choice::Named(_));
        match format {
            _ if !self.active() => None,
            Format::Generic => Some(Constraint::JsonSchema(grammar::generic(
                &self.callable(),
                self.parallel,
                !forced,
            ))),
            _ if forced => Some(grammar::forced_call(
                format,
                &self.callable(),
                self.parallel,
                tok,
            )),
            _ => None,
        }
    }

    /// The generic format's system message: the tools and how to call them.
    pub fn generic_prompt(&self) -> String {
        let fns: Vec<String> = self
            .callable()
            .iter()
            .map(|f| {
                let mut v = json!({"name": f.name, "parameters": f.parameters});
                if let Some(d) = &f.description {
                    v["description"] = json!(d);
                }
                v.to_string()
            })
            .collect();
        let call = r#"{"name": <tool name>, "arguments": <its arguments as a JSON object>}"#;
        let how = if self.parallel {
            format!(r#"{{"tool_calls": [{call}, ...]}} to call one or more tools"#)
        } else {
            format!(r#"{{"tool_call": {call}}} to call a tool"#)
        };
        let answer = match self.choice {
            Choice::Auto => r#", or {"response": <your reply>} to answer the user directly"#,
            _ => "",
        };
        format!(
            "You can use these tools:\n{}\n\nReply with one JSON object and nothing else: {how}{answer}. A tool's result comes back to you as {{\"tool_response\": ...}}.",
            fns.join("\n")
        )
    }
}

/// `tools[i]`: `{"type": "function", "function": {"name", "description", "parameters"}}`.
fn function(i: usize, t: &Value) -> Result<Function, ApiError> {
    let field = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            format!("{field}.type"),
            format!("`{field}.type` must be \"function\""),
        ));
    }
    let Some(f) = t.get("function").filter(|f| f.is_object()) else {
        return Err(ApiError::invalid(
            format!("{field}.function"),
            format!("`{field}.function` must be an object with a `name`"),
        ));
    };
    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(ApiError::invalid(
            format!("{field}.function.name"),
            format!("`{field}.function.name` must be 1 to 64 letters, digits, `_` or `-`"),
        ));
    }
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{field}.function.parameters"),
                format!("`{field}.function.parameters` must be a JSON schema (an object)"),
            ))
        }
    };
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{field}.function.description"),
                format!("`{field}.function.description` must be a string"),
            ))
        }
    };
    Ok(Function {
        name: name.to_string(),
        description,
        parameters,
    })
}

/// `tool_choice`: `auto` by default when tools are offered, `none` when not.
fn tool_choice(v: Option<&Value>, fns: &[Function]) -> Result<Choice, ApiError> {
    let field = "tool_choice";
    let choice = match v {
        None | Some(Value::Null) if fns.is_empty() => Choice::None,
        None | Some(Value::Null) => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            other => {
                return Err(ApiError::invalid(
                    field,
                    format!("unknown `tool_choice` {other:?} (none, auto, required, or {{\"type\": \"function\", \"function\": {{\"name\": …}}}})"),
                ))
            }
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    ApiError::invalid(
                        field,
                        "`tool_choice` must be none, auto, required, or {\"type\": \"function\", \"function\": {\"name\": …}}",
                    )
                })?;
            if !fns.iter().any(|f| f.name == name) {
                return Err(ApiError::invalid(
                    "tool_choice.function.name",
                    format!("`tool_choice` names `{name}`, which is not among `tools`"),
                ));
            }
            Choice::Named(name.to_string())
        }
    };
    if fns.is_empty() && choice != Choice::None {
        return Err(ApiError::invalid(
            field,
            "`tool_choice` asks for a tool call but `tools` offers none",
        ));
    }
    Ok(choice)
}

/// Rewrites a conversation's tool turns for a template that knows no tools (the generic
/// format): an assistant's calls become its text, in the generic format's JSON, and a tool's
/// result becomes a user turn, `{"tool_response": {"name", "content"}}`.
pub fn generic_history(messages: &mut [Value]) {
    for m in messages.iter_mut() {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        if let Some(calls) = obj.remove("tool_calls").filter(|c| c.is_array()) {
            let calls: Vec<Value> = calls
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let f = c.get("function").cloned().unwrap_or_default();
                    json!({"name": f.get("name"), "arguments": f.get("arguments")})
                })
                .collect();
            let text = json!({ "tool_calls": calls }).to_string();
            let before = obj.get("content").and_then(Value::as_str).unwrap_or("");
            let content = if before.is_empty() {
                text
            } else {
                format!("{before}\n{text}")
            };
            obj.insert("content".into(), json!(content));
        }
        if obj.get("role").and_then(Value::as_str) == Some("tool") {
            let name = obj.remove("name").unwrap_or(Value::Null);
            let content = obj.remove("content").unwrap_or(Value::Null);
            let response = json!({"tool_response": {"name": name, "content": content}});
            obj.remove("tool_call_id");
            obj.insert("role".into(), json!("user"));
            obj.insert("content".into(), json!(response.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_from_templates() {
        let cases = [
            (
                "{{ '<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args>}' }}",
                Format::Hermes,
            ),
            ("<tool_call>\n<function={{ name }}>", Format::Generic),
            ("[TOOL_CALLS][{{ calls }}]", Format::Mistral { args: false }),
            (
                "[TOOL_CALLS]{{ name }}[ARGS]{{ args }}",
                Format::Mistral { args: true },
            ),
            (
                "<|start_header_id|>{\"name\": function name, \"parameters\": …}",
                Format::Llama3Json,
            ),
            ("{{ messages }}", Format::Generic),
        ];
        for (src, want) in cases {
            assert_eq!(Format::of_template(src), want, "{src}");
        }
        assert_eq!(
            Format::from_name("mistral", Some("[ARGS]")),
            Ok(Format::Mistral { args: true })
        );
        assert!(Format::from_name("xml", None)
            .unwrap_err()
            .contains("hermes"));
    }

    #[test]
    fn call_ids_fit_their_format() {
        let m = Format::Mistral { args: false }.call_id(7);
        assert!(
            m.len() == 9 && m.chars().all(|c| c.is_ascii_alphanumeric()),
            "{m}"
        );
        let h = Format::Hermes.call_id(7);
        assert!(h.starts_with("call_") && h.len() == 14, "{h}");
        assert_ne!(Format::Hermes.call_id(8), h);
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    #[test]
    fn bad_tools_name_their_field() {
        let t = weather();
        let err = |tools: Value, choice: Option<Value>| {
            Tools::from_request(Some(&tools), choice.as_ref(), None)
                .unwrap_err()
                .param
                .unwrap()
        };
        assert_eq!(err(json!([{"type": "code"}]), None), "tools[0].type");
        assert_eq!(
            err(
                json!([{"type": "function", "function": {"name": "a b"}}]),
                None
            ),
            "tools[0].function.name"
        );
        assert_eq!(
            err(
                json!([{"type": "function", "function": {"name": "f", "parameters": 3}}]),
                None
            ),
            "tools[0].function.parameters"
        );
        assert_eq!(err(t.clone(), Some(json!("always"))), "tool_choice");
        assert_eq!(
            err(
                t.clone(),
                Some(json!({"type": "function", "function": {"name": "nope"}}))
            ),
            "tool_choice.function.name"
        );
        assert_eq!(err(json!([]), Some(json!("required"))), "tool_choice");
        let ok = Tools::from_request(Some(&t), None, Some(&json!(false)))
            .unwrap()
            .unwrap();
        assert_eq!((ok.choice, ok.parallel), (Choice::Auto, false));
    }

    #[test]
    fn generic_history_writes_calls_and_results_as_text() {
        let mut msgs = vec![
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}),
            json!({"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18C"}),
        ];
        generic_history(&mut msgs);
        let call = json!({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]});
        assert_eq!(msgs[0]["content"], call.to_string());
        assert!(msgs[0].get("tool_calls").is_none());
        assert_eq!(msgs[1]["role"], "user");
        assert_eq!(
            msgs[1]["content"],
            json!({"tool_response": {"name": "get_weather", "content": "18C"}}).to_string()
        );
    }
}
