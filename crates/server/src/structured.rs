//! Structured outputs: the request fields that constrain a reply, in the dialects clients
//! speak — OpenAI's `response_format` (`json_object`, `json_schema`), vLLM's
//! `structured_outputs` (`json`, `regex`, `choice`, `grammar`, `json_object`) and its older
//! `guided_*` fields, llama-server's `json_schema` and `grammar` (GBNF, converted to the Lark
//! dialect llguidance reads; `%llguidance` grammars pass as they are) — into one engine
//! `Constraint`, compiled for the served tokenizer. At most one may be given; one that does not
//! compile is a 400 naming the field, with llguidance's message: nothing runs unconstrained.

mod gbnf;

use crate::error::ApiError;
use crate::AppState;
use everett_engine::constraint::{Compiler, Constraint, Grammar};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// The request fields read here (both generation routes take them).
pub const FIELDS: &[&str] = &[
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "json_schema",
    "grammar",
];

#[derive(Deserialize, Default)]
pub struct Fields {
    response_format: Option<Value>,
    structured_outputs: Option<Value>,
    guided_json: Option<Value>,
    guided_regex: Option<Value>,
    guided_choice: Option<Value>,
    guided_grammar: Option<Value>,
    json_schema: Option<Value>,
    grammar: Option<Value>,
}

/// A constraint and the field it came from (named in its errors).
pub struct Asked {
    pub field: String,
    pub constraint: Constraint,
}

impl Fields {
    /// Only OpenAI's and vLLM's object forms (the explore route takes these two).
    pub fn objects(response_format: Option<Value>, structured_outputs: Option<Value>) -> Self {
        Self {
            response_format,
            structured_outputs,
            ..Self::default()
        }
    }

    /// The constraint the request asks for, if any.
    pub fn asked(&self) -> Result<Option<Asked>, ApiError> {
        let mut found: Vec<Asked> = Vec::new();
        if let Some(v) = &self.response_format {
            found.extend(response_format(v)?);
        }
        if let Some(v) = &self.structured_outputs {
            found.extend(structured_outputs(v)?);
        }
        let plain = [
            ("guided_json", &self.guided_json),
            ("guided_regex", &self.guided_regex),
            ("guided_choice", &self.guided_choice),
            ("guided_grammar", &self.guided_grammar),
            ("json_schema", &self.json_schema),
            ("grammar", &self.grammar),
        ];
        for (name, v) in plain {
            let Some(v) = v.as_ref().filter(|v| !v.is_null()) else {
                continue;
            };
            let kind = name.trim_start_matches("guided_");
            found.push(one(name, kind, v)?);
        }
        if found.len() > 1 {
            let names: Vec<&str> = found.iter().map(|a| a.field.as_str()).collect();
            return Err(ApiError::invalid(
                names[1],
                format!(
                    "only one constraint per request; this one asks for {}",
                    names.join(" and ")
                ),
            ));
        }
        Ok(found.pop())
    }
}

/// OpenAI's `response_format`: `text`, `json_object`, or `json_schema` with its `schema`.
fn response_format(v: &Value) -> Result<Option<Asked>, ApiError> {
    let field = "response_format";
    let ty = v.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            "response_format.type",
            "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\"",
        )
    })?;
    match ty {
        "text" => Ok(None),
        "json_object" => Ok(Some(Asked {
            field: field.into(),
            constraint: Constraint::JsonObject,
        })),
        "json_schema" => {
            let js = v
                .get("json_schema")
                .filter(|j| j.is_object())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "response_format.json_schema",
                        "`response_format.json_schema` must be an object with a `schema`",
                    )
                })?;
            let schema = js.get("schema").cloned().unwrap_or(Value::Bool(true));
            Ok(Some(Asked {
                field: "response_format.json_schema.schema".into(),
                constraint: json_schema("response_format.json_schema.schema", schema)?,
            }))
        }
        other => Err(ApiError::invalid(
            "response_format.type",
            format!("unknown `response_format.type` {other:?} (text, json_object, json_schema)"),
        )),
    }
}

/// vLLM's `structured_outputs` object: one of `json`, `regex`, `choice`, `grammar`,
/// `json_object`.
fn structured_outputs(v: &Value) -> Result<Option<Asked>, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::invalid(
            "structured_outputs",
            "`structured_outputs` must be an object such as {\"json\": {...}}",
        ));
    };
    let mut found = Vec::new();
    for (k, v) in obj {
        if v.is_null() || *v == Value::Bool(false) {
            continue;
        }
        let name = format!("structured_outputs.{k}");
        match k.as_str() {
            "json" | "regex" | "choice" | "grammar" => found.push(one(&name, k, v)?),
            "json_object" => found.push(Asked {
                field: name,
                constraint: Constraint::JsonObject,
            }),
            _ => {
                return Err(ApiError::invalid(
                    &name,
                    format!("unknown field `{k}` in `structured_outputs` (json, regex, choice, grammar, json_object)"),
                ))
            }
        }
    }
    if found.len() > 1 {
        return Err(ApiError::invalid(
            "structured_outputs",
            "`structured_outputs` takes one of json, regex, choice, grammar, json_object",
        ));
    }
    Ok(found.pop())
}

/// One constraint of kind `kind` (`json`, `json_schema`, `regex`, `choice`, `grammar`) from
/// field `name`.
fn one(name: &str, kind: &str, v: &Value) -> Result<Asked, ApiError> {
    let text = || {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::invalid(name, format!("`{name}` must be a string")))
    };
    let constraint = match kind {
        "json" | "json_schema" => json_schema(name, v.clone())?,
        "regex" => Constraint::Regex(text()?),
        "grammar" => {
            Constraint::Lark(gbnf::to_lark(&text()?).map_err(|e| ApiError::invalid(name, e))?)
        }
        "choice" => {
            let list = v.as_array().ok_or_else(|| {
                ApiError::invalid(name, format!("`{name}` must be a list of strings"))
            })?;
            let choices = list
                .iter()
                .map(|c| c.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::invalid(name, format!("`{name}` must be a list of strings"))
                })?;
            if choices.is_empty() {
                return Err(ApiError::invalid(name, format!("`{name}` is empty")));
            }
            Constraint::Choice(choices)
        }
        _ => unreachable!("the callers pass known kinds"),
    };
    Ok(Asked {
        field: name.to_string(),
        constraint,
    })
}

/// A JSON schema given as an object, a boolean, or a string holding one.
fn json_schema(name: &str, v: Value) -> Result<Constraint, ApiError> {
    let schema = match v {
        Value::String(s) => serde_json::from_str(&s)
            .map_err(|e| ApiError::invalid(name, format!("`{name}` is not valid JSON: {e}")))?,
        other => other,
    };
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(ApiError::invalid(
            name,
            format!("`{name}` must be a JSON schema (an object)"),
        ));
    }
    Ok(Constraint::JsonSchema(schema))
}

/// Compiles `asked` for the served tokenizer (the compiler is built on first use).
pub fn compile(st: &AppState, asked: &Asked) -> Result<Grammar, ApiError> {
    let compiler = st
        .compiler
        .get_or_init(|| {
            Compiler::new(st.cfg.tokenizer.clone())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| ApiError::from(everett_engine::Error::Internal(e)))?;
    compiler
        .compile(&asked.constraint)
        .map_err(|e| ApiError::invalid(&asked.field, format!("`{}` {}", asked.field, problem(&e))))
}

/// The part of an engine error worth quoting after the field's name.
fn problem(e: &everett_engine::Error) -> String {
    match e {
        everett_engine::Error::Param { problem, .. } => problem.clone(),
        other => other.to_string(),
    }
}
