//! Tool calls read out of a model's reply, one parser per format (see `Format`). A reply that
//! does not hold well-formed calls is content, whole: a parser never drops text it could not
//! read, and never invents a call from half of one.

use super::Format;
use serde_json::Value;

/// One call the model made: the function's name and its arguments as a JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

/// A reply split into the text for the user and the calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub content: String,
    pub calls: Vec<Call>,
}

impl Parsed {
    fn text(text: &str) -> Self {
        Self {
            content: text.to_string(),
            calls: Vec::new(),
        }
    }
}

pub const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
pub const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";
pub const PYTHON_TAG: &str = "<|python_tag|>";

/// The calls in `text`, a whole reply in `format`.
pub fn parse(format: Format, text: &str) -> Parsed {
    let calls = match format {
        Format::Hermes => hermes(text),
        Format::Llama3Json => llama3(text).map(|c| (String::new(), c)),
        Format::Mistral { args } => mistral(text, args),
        Format::Generic => return generic(text),
    };
    match calls {
        Some((content, calls)) if !calls.is_empty() => Parsed { content, calls },
        _ => Parsed::text(text),
    }
}

/// `{"name": …, "arguments" | "parameters": …}` as a call; arguments given as a JSON text
/// (some models write them so) are kept as they are when they parse.
fn call_of(v: &Value) -> Option<Call> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters"));
    let arguments = match args {
        None | Some(Value::Null) => "{}".to_string(),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).ok()?;
            s.clone()
        }
        Some(a @ Value::Object(_)) => a.to_string(),
        Some(_) => return None,
    };
    Some(Call { name, arguments })
}

/// One call, or a list of calls, as JSON.
fn calls_of(v: &Value) -> Option<Vec<Call>> {
    match v {
        Value::Array(items) => items.iter().map(call_of).collect(),
        other => call_of(other).map(|c| vec![c]),
    }
}

/// Hermes / Qwen: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, repeated;
/// the text before the first block and after the last is content.
fn hermes(text: &str) -> Option<(String, Vec<Call>)> {
    let first = text.find(HERMES_OPEN)?;
    let mut content = text[..first].trim_end().to_string();
    let mut calls = Vec::new();
    let mut rest = &text[first..];
    while let Some(open) = rest.find(HERMES_OPEN) {
        // Only whitespace may stand between two blocks.
        if !rest[..open].trim().is_empty() {
            return None;
        }
        let body = &rest[open + HERMES_OPEN.len()..];
        let (inner, after) = match body.find(HERMES_CLOSE) {
            Some(close) => (&body[..close], &body[close + HERMES_CLOSE.len()..]),
            // A reply that stopped at the block's end without its closing tag.
            None => (body, ""),
        };
        calls.extend(calls_of(&serde_json::from_str(inner.trim()).ok()?)?);
        rest = after;
    }
    let tail = rest.trim();
    if !tail.is_empty() {
        if !content.is_empty() {
            content.push('\n');
        }
        content.push_str(tail);
    }
    Some((content, calls))
}

/// Llama 3.x: the whole reply is `{"name": …, "parameters": {…}}` (after an optional
/// `<|python_tag|>`), or several such objects separated by `;`.
fn llama3(text: &str) -> Option<Vec<Call>> {
    let body = text.trim();
    let body = body.strip_prefix(PYTHON_TAG).unwrap_or(body).trim();
    if !body.starts_with('{') {
        return None;
    }
    let mut calls = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let v = values.next()?.ok()?;
        calls.push(call_of(&v)?);
        rest = rest[values.byte_offset()..].trim_start();
        rest = rest.strip_prefix(';').unwrap_or(rest).trim_start();
    }
    Some(calls)
}

/// Mistral: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`, or in the newer form
/// (`args`) `[TOOL_CALLS]name[ARGS]{…}`, repeated.
fn mistral(text: &str, args: bool) -> Option<(String, Vec<Call>)> {
    let first = text.find(MISTRAL_OPEN)?;
    let content = text[..first].trim_end().to_string();
    let mut calls = Vec::new();
    for block in text[first..].split(MISTRAL_OPEN).skip(1) {
        let block = block.trim();
        if args && !block.starts_with(['[', '{']) {
            let (name, json) = block.split_once(MISTRAL_ARGS)?;
            let v: Value = serde_json::from_str(json.trim()).ok()?;
            calls.push(Call {
                name: name.trim().to_string(),
                arguments: v.is_object().then(|| v.to_string())?,
            });
        } else {
            calls.extend(calls_of(&serde_json::from_str(block).ok()?)?);
        }
    }
    Some((content, calls))
}

/// The generic format (every model): one JSON object, `{"tool_calls": [{"name", "arguments"}]}`
/// or `{"tool_call": {…}}` to call, `{"response": "…"}` to answer.
fn generic(text: &str) -> Parsed {
    let Ok(v) = serde_json::from_str::<Value>(text.trim()) else {
        return Parsed::text(text);
    };
    if let Some(calls) = v
        .get("tool_calls")
        .or_else(|| v.get("tool_call"))
        .and_then(calls_of)
        .filter(|c| !c.is_empty())
    {
        return Parsed {
            content: String::new(),
            calls,
        };
    }
    match v.get("response") {
        Some(Value::String(s)) => Parsed::text(s),
        Some(other) => Parsed::text(&other.to_string()),
        None => Parsed::text(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> Call {
        Call {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    // The replies below are written in the forms each family's chat template asks its model
    // for (the template text quoted in each test), as the models write them.

    #[test]
    fn hermes_blocks_with_text_around_them() {
        // Qwen 2.5: "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"
        let out = "I'll check both.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"unit\": \"celsius\"}}\n</tool_call>";
        assert_eq!(
            parse(Format::Hermes, out),
            Parsed {
                content: "I'll check both.".into(),
                calls: vec![
                    call("get_weather", r#"{"city":"Paris"}"#),
                    call("get_weather", r#"{"city":"Rome","unit":"celsius"}"#),
                ],
            }
        );
        // Stopped at the end of the block, before the closing tag.
        let open = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n";
        assert_eq!(parse(Format::Hermes, open).calls, vec![call("now", "{}")]);
    }

    #[test]
    fn broken_calls_are_content_whole() {
        for (format, out) in [
            (
                Format::Hermes,
                "<tool_call>\n{\"name\": \"get_weather\", \"argu",
            ),
            (Format::Hermes, "<tool_call>{\"arguments\": {}}</tool_call>"),
            (Format::Llama3Json, "{\"name\": \"f\", \"parameters\": [1]}"),
            (Format::Llama3Json, "The answer is {\"name\": \"f\"}"),
            (
                Format::Mistral { args: false },
                "[TOOL_CALLS][{\"name\": \"f\", ",
            ),
            (Format::Mistral { args: true }, "[TOOL_CALLS]f{\"a\": 1}"),
            (Format::Generic, "{\"tool_call\": {\"name\": 3}}"),
            (Format::Generic, "plain words"),
        ] {
            assert_eq!(parse(format, out), Parsed::text(out), "{format:?} {out}");
        }
    }

    #[test]
    fn llama3_json_with_and_without_the_python_tag() {
        // Llama 3.1: 'Respond in the format {"name": function name, "parameters": dictionary
        // of argument name and its value}.'
        let out = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert_eq!(
            parse(Format::Llama3Json, out).calls,
            vec![call("get_weather", r#"{"city":"Paris"}"#)]
        );
        let tagged = "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1}}";
        assert_eq!(
            parse(Format::Llama3Json, tagged).calls,
            vec![call("a", "{}"), call("b", r#"{"x":1}"#)]
        );
        assert!(parse(Format::Llama3Json, "Paris is sunny.")
            .calls
            .is_empty());
    }

    #[test]
    fn mistral_both_forms() {
        // Mistral Nemo: [TOOL_CALLS][{"name": …, "arguments": {…}, "id": …}]
        let nemo = "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcDEF123\"}]";
        assert_eq!(
            parse(Format::Mistral { args: false }, nemo).calls,
            vec![call("get_weather", r#"{"city":"Paris"}"#)]
        );
        // Mistral Small 3.2 / Devstral: [TOOL_CALLS]name[ARGS]{…}
        let small =
            "Let me look.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]now[ARGS]{}";
        assert_eq!(
            parse(Format::Mistral { args: true }, small),
            Parsed {
                content: "Let me look.".into(),
                calls: vec![
                    call("get_weather", r#"{"city":"Paris"}"#),
                    call("now", "{}")
                ],
            }
        );
    }

    #[test]
    fn generic_calls_and_responses() {
        let one = r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#;
        assert_eq!(
            parse(Format::Generic, one).calls,
            vec![call("get_weather", r#"{"city":"Paris"}"#)]
        );
        let many = r#"{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{\"x\": 1}"}]}"#;
        assert_eq!(
            parse(Format::Generic, many).calls,
            vec![call("a", "{}"), call("b", r#"{"x": 1}"#)]
        );
        assert_eq!(
            parse(Format::Generic, r#"{"response": "It is sunny."}"#),
            Parsed::text("It is sunny.")
        );
    }
}
