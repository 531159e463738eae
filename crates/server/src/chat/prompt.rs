//! How a conversation becomes a prompt: the GGUF's `tokenizer.chat_template` run by minijinja
//! (with Python-style string methods, as Hugging Face templates expect); a model without one
//! gets its architecture's known format (Gemma's turn markers for gemma3), and a model with
//! neither is refused with a 400: messages are never silently concatenated. The template also
//! says how its model thinks (`reasoning::Tags`) and calls tools (`tools::Format`).

use crate::reasoning::{Reasoning, Tags};
use crate::template::Template;
use crate::tools::Format;
use everett_engine::tokenizer::Tokenizer;
use serde_json::Value;

/// A conversation as templates read it: messages as Hugging Face passes them (`role`,
/// `content`, and `tool_calls`, `tool_call_id`, `name` where they have them) and the tools
/// offered (`None`: the template is not told of any).
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub messages: Vec<Value>,
    pub tools: Option<Value>,
}

impl Conversation {
    /// Plain (role, text) turns.
    pub fn of_turns(turns: &[(String, String)]) -> Self {
        Self {
            messages: turns
                .iter()
                .map(|(role, content)| serde_json::json!({"role": role, "content": content}))
                .collect(),
            tools: None,
        }
    }
}

/// How messages become a prompt.
pub struct ChatTemplate {
    kind: Kind,
    /// The thinking tags its source writes (a reasoning model's).
    tags: Option<Tags>,
    /// How its model calls tools.
    tools: Format,
}

enum Kind {
    /// A Jinja template (from the GGUF), compiled once at start-up.
    Jinja(Box<Template>),
    /// Gemma's `<start_of_turn>role … <end_of_turn>` format.
    Gemma,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template as Hugging Face runs them (see `template`); a syntax
    /// error is reported here, at start-up.
    pub fn jinja(src: String) -> Result<Self, String> {
        let tags = Tags::of_template(&src);
        let tools = Format::of_template(&src);
        Template::new(src).map(|t| Self {
            kind: Kind::Jinja(Box::new(t)),
            tags,
            tools,
        })
    }

    /// The GGUF's template, else the architecture's known format, else none.
    pub fn choose(gguf: Option<String>, arch: &str) -> Result<Option<Self>, String> {
        match (gguf, arch) {
            (Some(t), _) => Self::jinja(t).map(Some),
            (None, "gemma3") => Ok(Some(Self {
                kind: Kind::Gemma,
                tags: None,
                tools: Format::Generic,
            })),
            _ => Ok(None),
        }
    }

    /// The same template with its model's tool calls read as `format` (`--tool-call-parser`).
    pub fn with_tool_format(self, format: Format) -> Self {
        Self {
            tools: format,
            ..self
        }
    }

    /// How its model calls tools.
    pub fn tool_format(&self) -> Format {
        self.tools
    }

    /// Whether this is the built-in Gemma format (no Jinja source).
    pub fn is_builtin(&self) -> bool {
        matches!(self.kind, Kind::Gemma)
    }

    /// The prompt tokens for plain (role, content) turns, ready for the model's answer; a
    /// template that fails says why.
    pub fn prompt_ids(
        &self,
        tok: &Tokenizer,
        turns: &[(String, String)],
    ) -> Result<Vec<u32>, String> {
        self.prompt(tok, &Conversation::of_turns(turns))
            .map(|p| p.0)
    }

    /// The prompt tokens for `conv` and how the reply's thought is split off (`None` for a
    /// template without thinking tags).
    pub fn prompt(
        &self,
        tok: &Tokenizer,
        conv: &Conversation,
    ) -> Result<(Vec<u32>, Option<Reasoning>), String> {
        let (text, bos) = self.prompt_text(tok, conv)?;
        // A template that writes BOS itself must not get a second one.
        let add_bos = bos.is_empty() || !text.starts_with(&bos);
        let reasoning = self.tags.map(|tags| Reasoning::for_prompt(tags, &text));
        Ok((tok.encode(&text, add_bos, true), reasoning))
    }

    /// The prompt text for `conv` with the model's BOS and EOS texts, and the BOS text.
    pub fn prompt_text(
        &self,
        tok: &Tokenizer,
        conv: &Conversation,
    ) -> Result<(String, String), String> {
        let special = |id: Option<u32>| id.map(|i| tok.piece(i).to_string()).unwrap_or_default();
        let (bos, eos) = (special(tok.bos), special(tok.eos));
        Ok((self.render(conv, &bos, &eos)?, bos))
    }

    /// The prompt text for `conv`, ready for the model's answer.
    fn render(&self, conv: &Conversation, bos: &str, eos: &str) -> Result<String, String> {
        let Kind::Jinja(t) = &self.kind else {
            return Ok(gemma(&conv.messages));
        };
        let messages = minijinja::Value::from_serialize(&conv.messages);
        let mut vars = minijinja::context! {
            messages, add_generation_prompt => true, bos_token => bos, eos_token => eos,
        };
        if let Some(tools) = &conv.tools {
            vars = minijinja::context! { tools => minijinja::Value::from_serialize(tools), ..vars };
        }
        t.render(vars)
    }
}

/// Gemma's format: the system message opens the first user turn; the assistant is `model`,
/// every other role (a tool's result) speaks as the user.
fn gemma(msgs: &[Value]) -> String {
    let mut out = String::new();
    let mut system = String::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => system = format!("{content}\n\n"),
            _ => {
                let who = if role == "assistant" { "model" } else { "user" };
                let text = if who == "user" {
                    std::mem::take(&mut system) + content
                } else {
                    content.to_string()
                };
                out.push_str(&format!("<start_of_turn>{who}\n{text}<end_of_turn>\n"));
            }
        }
    }
    out + "<start_of_turn>model\n"
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
        let gemma = ChatTemplate::choose(None, "gemma3").unwrap().unwrap();
        assert!(gemma.is_builtin());
        assert_eq!(gemma.tool_format(), Format::Generic);
    }

    #[test]
    fn gemma_turns_fold_the_system_message_into_the_first_user_turn() {
        let turns: Vec<(String, String)> = [
            ("system", "Be brief."),
            ("user", "Hi"),
            ("assistant", "Hello!"),
            ("user", "Why?"),
        ]
        .iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect();
        assert_eq!(
            gemma(&Conversation::of_turns(&turns).messages),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn tools_reach_the_template() {
        let t = ChatTemplate::jinja(
            "{% for t in tools %}{{ t.function.name }};{% endfor %}{% for m in messages %}{{ m.role }}:{{ m.tool_calls[0].function.arguments | tojson if m.tool_calls else m.content }}|{% endfor %}".into(),
        )
        .unwrap();
        let conv = Conversation {
            messages: vec![
                serde_json::json!({"role": "user", "content": "hi"}),
                serde_json::json!({"role": "assistant", "content": null,
                    "tool_calls": [{"function": {"name": "f", "arguments": {"b": 1, "a": 2}}}]}),
            ],
            tools: Some(serde_json::json!([{"type": "function", "function": {"name": "f"}}])),
        };
        assert_eq!(
            t.render(&conv, "", "").unwrap(),
            "f;user:hi|assistant:{\"b\": 1, \"a\": 2}|"
        );
    }
}
