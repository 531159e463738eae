//! The constraint that makes a model call a tool: for `tool_choice` `required` or a named
//! function, a grammar of the format's call syntax around each function's parameter schema, so
//! the call always parses; for the generic format, a JSON schema on every reply (a call or a
//! `response`). The JSON inside is written as Python's `json.dumps` writes it (`", "`, `": "`),
//! the form the templates show their models. A function takes the parameters it declares: a
//! parameter schema with `properties` and no word on `additionalProperties` gets no others.

use super::{Format, Function};
use everett_engine::constraint::Constraint;
use everett_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// How the JSON inside a call is spaced.
fn spacing() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

/// The schema a call's arguments must meet.
fn arguments(f: &Function) -> Value {
    let mut p = f.parameters.clone();
    if let Some(o) = p.as_object_mut() {
        if o.contains_key("properties") && !o.contains_key("additionalProperties") {
            o.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    p
}

/// `{"name": <name>, <args_key>: <arguments>}` for one function.
fn call_schema(f: &Function, args_key: &str) -> Value {
    json!({
        "type": "object",
        "properties": {"name": {"const": f.name}, args_key: arguments(f)},
        "required": ["name", args_key],
        "additionalProperties": false,
    })
}

/// One call of any of `fns`, as a JSON schema with the call spacing.
fn any_call(fns: &[&Function], args_key: &str) -> Value {
    let calls: Vec<Value> = fns.iter().map(|f| call_schema(f, args_key)).collect();
    json!({"anyOf": calls, "x-guidance": spacing()})
}

/// `text` as a grammar literal: a control token by its id (its text is no text), else the
/// string.
fn literal(tok: &Tokenizer, text: &str) -> String {
    match tok.encode(text, false, true)[..] {
        [id] if tok.is_control(id) => format!("<[{id}]>"),
        _ => Value::from(text).to_string(),
    }
}

/// The grammar that forces a call of one of `fns` (several when `parallel`) in `format`.
pub fn forced_call(
    format: Format,
    fns: &[&Function],
    parallel: bool,
    tok: &Tokenizer,
) -> Constraint {
    match format {
        Format::Hermes => {
            let open = literal(tok, "<tool_call>");
            let close = literal(tok, "</tool_call>");
            let call = any_call(fns, "arguments");
            let rep = if parallel { "(\"\\n\" call)*" } else { "" };
            Constraint::Lark(format!(
                "start: call {rep}\ncall: {open} \"\\n\" %json {call} \"\\n\" {close}\n"
            ))
        }
        Format::Llama3Json => {
            let call = any_call(fns, "parameters");
            let rep = if parallel { "(\"; \" call)*" } else { "" };
            Constraint::Lark(format!("start: call {rep}\ncall: %json {call}\n"))
        }
        Format::Mistral { args: false } => {
            let open = literal(tok, "[TOOL_CALLS]");
            let mut list = json!({
                "type": "array",
                "items": {"anyOf": fns.iter().map(|f| call_schema(f, "arguments")).collect::<Vec<_>>()},
                "minItems": 1,
                "x-guidance": spacing(),
            });
            if !parallel {
                list["maxItems"] = json!(1);
            }
            Constraint::Lark(format!("start: {open} %json {list}\n"))
        }
        Format::Mistral { args: true } => {
            let open = literal(tok, "[TOOL_CALLS]");
            let args = literal(tok, "[ARGS]");
            let alts: Vec<String> = fns
                .iter()
                .map(|f| {
                    let mut p = arguments(f);
                    if let Some(o) = p.as_object_mut() {
                        o.insert("x-guidance".into(), spacing());
                    }
                    format!("{} {args} %json {p}", Value::from(f.name.as_str()))
                })
                .collect();
            let rep = if parallel { "call*" } else { "" };
            Constraint::Lark(format!(
                "start: call {rep}\ncall: {open} one\none: {}\n",
                alts.join("\n    | ")
            ))
        }
        Format::Generic => Constraint::JsonSchema(generic(fns, parallel, false)),
    }
}

/// The generic format's schema: a call of one of `fns` (`tool_calls`, a list, when
/// `parallel`; else `tool_call`), or, when `may_answer`, a `response` to the user.
pub fn generic(fns: &[&Function], parallel: bool, may_answer: bool) -> Value {
    let calls: Vec<Value> = fns.iter().map(|f| call_schema(f, "arguments")).collect();
    let (key, body) = if parallel {
        (
            "tool_calls",
            json!({"type": "array", "items": {"anyOf": calls}, "minItems": 1}),
        )
    } else {
        ("tool_call", json!({"anyOf": calls}))
    };
    let call = json!({
        "type": "object",
        "properties": {key: body},
        "required": [key],
        "additionalProperties": false,
    });
    let mut schema = if may_answer {
        let answer = json!({
            "type": "object",
            "properties": {"response": {"type": "string"}},
            "required": ["response"],
            "additionalProperties": false,
        });
        json!({"anyOf": [call, answer]})
    } else {
        call
    };
    schema["x-guidance"] = spacing();
    schema
}
