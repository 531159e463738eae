//! Tool calling through the HTTP API on a tiny model of random weights, which would never write
//! a call by itself: `required` and named calls are forced by the grammar in every format and
//! always parse; the generic format constrains every reply; streamed calls arrive as
//! `delta.tool_calls` before `finish_reason: "tool_calls"`; tools reach the template; and a tool
//! constraint refuses a second one.

mod common;

use axum::http::StatusCode;
use common::{app_of, call, sse_chunks, TEMPLATE};
use everett_engine::testutil::Tiny;
use everett_server::Limits;
use serde_json::{json, Value};
use std::time::Duration;

/// A template in the Hermes style: it lists the tools and shows the `<tool_call>` form.
const HERMES: &str = "{% if tools %}Tools: {% for t in tools %}{{ t.function.name }} {% endfor %}\
Call as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>\n{% endif %}\
{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:";

fn app(template: &str) -> axum::Router {
    // A vocabulary with every byte, so that any text can be spelled.
    // and a context that holds the generic format's system message and a call.
    let t = Tiny {
        vocab: 320,
        ctx: 2048,
        ..Tiny::llama()
    };
    app_of(t, template, None, Duration::ZERO, &[], Limits::default()).0
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["unit", "days"]}}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
    ])
}

/// Checks a call against `tools()`; its name.
fn check_call(c: &Value) -> String {
    assert_eq!(c["type"], "function", "{c}");
    assert!(
        c["id"].as_str().is_some_and(|id| id.starts_with("call_")),
        "{c}"
    );
    let name = c["function"]["name"].as_str().unwrap().to_string();
    let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
    match name.as_str() {
        "get_weather" => {
            assert!(["c", "f"].contains(&args["unit"].as_str().unwrap()), "{c}");
            assert!((1..=7).contains(&args["days"].as_i64().unwrap()), "{c}");
            assert_eq!(args.as_object().unwrap().len(), 2, "{c}");
        }
        "now" => assert_eq!(args, json!({}), "{c}"),
        other => panic!("called {other}"),
    }
    name
}

async fn chat(app: &axum::Router, extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "weather?"}],
        "tools": tools(), "max_tokens": 160, "temperature": 1.0});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (s, out) = call(app, "POST", "/v1/chat/completions", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn required_and_named_calls_always_parse_in_both_formats() {
    for template in [HERMES, TEMPLATE] {
        let app = app(template);
        for seed in 0..4 {
            for (choice, only) in [
                (json!("required"), None),
                (
                    json!({"type": "function", "function": {"name": "get_weather"}}),
                    Some("get_weather"),
                ),
            ] {
                let v = chat(&app, json!({"tool_choice": choice, "seed": seed, "n": 2})).await;
                for c in v["choices"].as_array().unwrap() {
                    assert_eq!(c["finish_reason"], "tool_calls", "{v}");
                    assert!(c["message"]["content"].is_null(), "{v}");
                    let calls = c["message"]["tool_calls"].as_array().unwrap();
                    assert_eq!(calls.len(), 1, "parallel calls are off by default: {v}");
                    let name = check_call(&calls[0]);
                    if let Some(only) = only {
                        assert_eq!(name, only);
                    }
                }
            }
        }
        // Parallel calls: one or more, each valid.
        let v = chat(
            &app,
            json!({"tool_choice": "required", "parallel_tool_calls": true,
            "seed": 1, "max_tokens": 200}),
        )
        .await;
        let c = &v["choices"][0];
        if c["finish_reason"] == "tool_calls" {
            c["message"]["tool_calls"]
                .as_array()
                .unwrap()
                .iter()
                .for_each(|c| {
                    check_call(c);
                });
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_calls_arrive_whole_before_the_finish() {
    let app = app(HERMES);
    let body = json!({"messages": [{"role": "user", "content": "weather?"}], "tools": tools(),
        "tool_choice": "required", "max_tokens": 160, "temperature": 1.0, "seed": 5, "stream": true});
    let (s, out) = call(&app, "POST", "/v1/chat/completions", Some(body.clone())).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let chunks = sse_chunks(&out);
    let with_calls: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("tool_calls").is_some())
        .collect();
    assert_eq!(with_calls.len(), 1, "{out}");
    let streamed = &with_calls[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(streamed["index"], 0);
    check_call(streamed);
    // Nothing of the call's text leaks out as content; the finish comes last, on its own.
    assert!(
        chunks.iter().all(|c| c["choices"][0]["delta"]["content"]
            .as_str()
            .is_none_or(str::is_empty)),
        "{out}"
    );
    let last = &chunks.last().unwrap()["choices"][0];
    assert_eq!(
        (last["finish_reason"].as_str(), &last["delta"]),
        (Some("tool_calls"), &json!({}))
    );
    // The same request unstreamed: the same call.
    let mut plain = body;
    plain["stream"] = json!(false);
    let (_, out) = call(&app, "POST", "/v1/chat/completions", Some(plain)).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"],
        streamed["function"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generic_format_answers_or_calls_and_renders_the_history() {
    let app = app(TEMPLATE);
    // auto: every reply is a call or an answer, never loose text.
    for seed in 0..4 {
        let v = chat(&app, json!({"seed": seed, "max_tokens": 200})).await;
        let c = &v["choices"][0];
        match c["finish_reason"].as_str() {
            Some("tool_calls") => {
                check_call(&c["message"]["tool_calls"][0]);
            }
            // An answer: the `response` string, unwrapped.
            Some("stop") => {
                assert!(
                    c["message"]["content"].is_string() && c["message"].get("tool_calls").is_none(),
                    "{v}"
                );
            }
            // A random model's free `response` string may run to the token limit.
            Some("length") => {}
            other => panic!("{other:?}: {v}"),
        }
    }
    // The system message of the generic format, and the history's calls and results as text.
    let body = json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "now", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"}],
        "tools": tools()});
    let (s, out) = call(&app, "POST", "/apply-template", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let prompt = serde_json::from_str::<Value>(&out).unwrap()["prompt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        prompt.contains("system: You can use these tools:\n{\"name\":\"get_weather\""),
        "{prompt}"
    );
    assert!(
        prompt.contains("assistant: {\"tool_calls\":[{\"name\":\"now\",\"arguments\":{}}]}"),
        "{prompt}"
    );
    assert!(
        prompt.contains("user: {\"tool_response\":{\"name\":null,\"content\":\"noon\"}}"),
        "{prompt}"
    );
    // tool_choice none: no tools in the prompt, no calls.
    let v = chat(&app, json!({"tool_choice": "none", "max_tokens": 8})).await;
    assert!(
        v["choices"][0]["message"].get("tool_calls").is_none(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_reach_a_template_that_knows_them_and_constraints_do_not_stack() {
    let app = app(HERMES);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools()});
    let (_, out) = call(&app, "POST", "/apply-template", Some(body)).await;
    let prompt = serde_json::from_str::<Value>(&out).unwrap()["prompt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        prompt.starts_with("Tools: get_weather now Call as <tool_call>"),
        "{prompt}"
    );
    // A forced call and a response_format cannot both hold.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools(),
        "tool_choice": "required", "response_format": {"type": "json_object"}});
    let (s, out) = call(&app, "POST", "/v1/chat/completions", Some(body)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["error"]["param"],
        "response_format"
    );
}
