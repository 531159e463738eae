//! The HTTP API through `router().oneshot(...)` on a tiny model: every endpoint so far, streaming
//! and not, and bad input answered with the OpenAI error object naming the field.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use common::{app_of, call, sse_chunks, TEMPLATE};
use everett_engine::engine::handle::EngineHandle;
use everett_engine::testutil::Tiny;
use everett_server::{loading, Limits};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

fn app() -> Router {
    app_with_key(None)
}

fn app_with_key(api_key: Option<&str>) -> Router {
    app_and_handle(api_key, Duration::ZERO).0
}

/// The router over a tiny model whose forward passes take at least `slow`, and its engine.
fn app_and_handle(api_key: Option<&str>, slow: Duration) -> (Router, EngineHandle) {
    app_with_faults(api_key, slow, &[])
}

/// As `app_and_handle`, with an engine that panics inside the steps numbered `faults`.
fn app_with_faults(
    api_key: Option<&str>,
    slow: Duration,
    faults: &[u64],
) -> (Router, EngineHandle) {
    app_full(api_key, slow, faults, Limits::default())
}

/// The router with request limits of its own (the engine's waiting queue matching them).
fn app_with_limits(limits: Limits) -> Router {
    app_full(None, Duration::ZERO, &[], limits).0
}

fn app_full(
    api_key: Option<&str>,
    slow: Duration,
    faults: &[u64],
    limits: Limits,
) -> (Router, EngineHandle) {
    app_of(Tiny::llama(), TEMPLATE, api_key, slow, faults, limits)
}

/// A small completion still succeeds (after some failure or cancellation).
async fn assert_still_serving(app: &Router) {
    let req = json!({"prompt": "a", "max_tokens": 2});
    let (s, body) = call(app, "POST", "/v1/completions", Some(req)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// A panic inside an engine step: the request in flight gets a 500 (or, streaming, an SSE
/// error event), the engine is rebuilt, later requests get what a fresh server gives, and
/// `/metrics` and `/health` tell the operator.
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_fault_fails_the_requests_in_flight_and_serving_goes_on() {
    let (app, handle) = app_with_faults(None, Duration::from_millis(2), &[3, 12]);
    let body =
        json!({"prompt": "once upon", "max_tokens": 20, "temperature": 0, "ignore_eos": true});
    // Steps 1-2 run the prompt and a token; step 3 panics.
    let (s, text) = call(&app, "POST", "/v1/completions", Some(body.clone())).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
    assert!(text.contains("internal_error"), "{text}");
    // The next one runs from step 4; step 12 panics inside its stream.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (s, text) = call(&app, "POST", "/v1/completions", Some(streamed)).await;
    assert_eq!(s, StatusCode::OK, "the stream had started");
    let last = sse_chunks(&text).pop().expect("an event");
    assert_eq!(last["error"]["type"], "internal_error", "{text}");
    // Later requests are served as by a fresh server.
    let (s, again) = call(&app, "POST", "/v1/completions", Some(body.clone())).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    let (fresh, _) = app_and_handle(None, Duration::ZERO);
    let (_, expected) = call(&fresh, "POST", "/v1/completions", Some(body)).await;
    let text_of = |b: &str| serde_json::from_str::<Value>(b).unwrap()["choices"][0]["text"].clone();
    assert_eq!(text_of(&again), text_of(&expected));
    let stats = handle.stats().unwrap();
    assert_eq!(
        (stats.restarts, stats.used_blocks, stats.running),
        (2, 0, 0)
    );
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("everett_engine_restarts_total 2"),
        "{metrics}"
    );
    let (s, health) = call(&app, "GET", "/health", None).await;
    assert_eq!((s, health.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_models() {
    let app = app();
    let (s, body) = call(&app, "GET", "/health", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = call(&app, "GET", "/v1/models", None).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], "tiny");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_served_without_a_key_and_the_api_is_not() {
    let app = app_with_key(Some("k"));
    let (s, body) = call(&app, "GET", "/", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.starts_with("<!DOCTYPE html>") && body.contains("everettView"));
    let (s, _) = call(&app, "POST", "/v1/explore", Some(json!({"prompt": "a"}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_is_503_until_the_model_is_loaded() {
    let (gate, slot) = loading();
    let (s, body) = call(&gate, "GET", "/health", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let req = json!({"prompt": "a", "max_tokens": 2});
    let (s, body) = call(&gate, "POST", "/v1/completions", Some(req)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("loading"));
    assert!(slot.set(app()).is_ok());
    let (s, body) = call(&gate, "GET", "/health", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_still_serving(&gate).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn context_overflow_stream_generates_past_the_context() {
    let app = app();
    // The tiny model's context is 256 tokens: 600 more only fit by streaming past it.
    let req = |overflow: &str| {
        json!({"prompt": "once upon", "max_tokens": 600, "temperature": 0, "ignore_eos": true,
               "context_overflow": overflow})
    };
    let (s, body) = call(&app, "POST", "/v1/completions", Some(req("stop"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("\"param\":\"max_tokens\""), "{body}");
    let (s, body) = call(&app, "POST", "/v1/completions", Some(req("stream"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_answer_with_choices_usage_and_logprobs() {
    let app = app();
    let req = json!({"model": "tiny", "prompt": "ab", "max_tokens": 6, "temperature": 0,
                     "n": 2, "logprobs": 2, "ignore_eos": true});
    let (s, body) = call(&app, "POST", "/v1/completions", Some(req)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for c in choices {
        assert_eq!(c["finish_reason"], "length");
        assert_eq!(c["logprobs"]["tokens"].as_array().unwrap().len(), 6);
        assert_eq!(
            c["logprobs"]["top_logprobs"][0].as_object().unwrap().len(),
            2
        );
    }
    // Greedy samples of one prompt agree.
    assert_eq!(choices[0]["text"], choices[1]["text"]);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        v["usage"]["prompt_tokens"].as_u64().unwrap() + 12
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_sends_chunks_usage_and_done_with_the_same_text() {
    let app = app();
    let base =
        json!({"prompt": [2, 40, 41], "max_tokens": 5, "temperature": 0, "ignore_eos": true});
    let (_, whole) = call(&app, "POST", "/v1/completions", Some(base.clone())).await;
    let whole: Value = serde_json::from_str(&whole).unwrap();
    let mut req = base;
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (s, body) = call(&app, "POST", "/v1/completions", Some(req)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("length")]);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_of_prompts_gets_n_choices_each_in_openai_order_streamed_or_not() {
    let app = app();
    let one = |prompt: Value| json!({"prompt": prompt, "max_tokens": 4, "temperature": 0, "ignore_eos": true});
    let mut alone = Vec::new();
    for p in ["ab", "hello", "zz top"] {
        let (s, body) = call(&app, "POST", "/v1/completions", Some(one(json!(p)))).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        alone.push(v["choices"][0]["text"].as_str().unwrap().to_string());
    }
    let mut req = one(json!(["ab", "hello", "zz top"]));
    req["n"] = json!(2);
    let (s, body) = call(&app, "POST", "/v1/completions", Some(req.clone())).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 6);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["text"].as_str().unwrap(), alone[i / 2], "choice {i}");
    }
    assert_eq!(v["usage"]["completion_tokens"], 24);
    // Streamed: the same texts per choice index.
    req["stream"] = json!(true);
    let (s, body) = call(&app, "POST", "/v1/completions", Some(req)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let mut texts = vec![String::new(); 6];
    for d in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if d == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(d).unwrap();
        let c = &c["choices"][0];
        texts[c["index"].as_u64().unwrap() as usize] += c["text"].as_str().unwrap();
    }
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(t, &alone[i / 2], "streamed choice {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_error_object_naming_the_field() {
    let app = app();
    let cases = [
        (
            json!({"prompt": "a", "temperature": -1}),
            "temperature",
            400,
        ),
        (json!({"prompt": "a", "top_p": 2}), "top_p", 400),
        (json!({"prompt": "a", "max_tokens": -5}), "max_tokens", 400),
        (json!({"prompt": "a", "n": 10000}), "n", 400),
        (json!({"prompt": "a", "logprobs": 1000}), "logprobs", 400),
        (json!({"prompt": [2, 99999]}), "prompt", 400),
        (json!({"prompt": "a", "max_tokens": 255}), "prompt", 400),
        (
            json!({"prompt": "a", "context_overflow": "wrap"}),
            "context_overflow",
            400,
        ),
        (json!({"prompt": "a", "model": "gpt-9"}), "model", 404),
        (json!({"prompt": 5}), "body", 400),
        (json!({"prompt": ""}), "prompt", 400),
        (json!({"prompt": []}), "prompt", 400),
        (json!({"prompt": ["a", ""]}), "prompt", 400),
        (
            json!({"prompt": "a", "min_tokens": 9, "max_tokens": 4}),
            "min_tokens",
            400,
        ),
    ];
    for (req, param, status) in cases {
        let (s, body) = call(&app, "POST", "/v1/completions", Some(req.clone())).await;
        assert_eq!(s.as_u16(), status, "{req}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["param"], param, "{req}: {body}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Not JSON at all, then a good request: the server carries on.
    let req = Request::builder()
        .method("POST")
        .uri("/v1/completions")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_still_serving(&app).await;
}

/// Every field is implemented or refused by name; sizes are refused before any work, naming
/// the numbers and the flag that sets them.
#[tokio::test(flavor = "multi_thread")]
async fn fields_are_implemented_or_refused_by_name_and_sizes_are_bounded() {
    let app = app_with_limits(Limits {
        max_waiting: 300,
        max_messages: 3,
        max_prompt_bytes: 1000,
        ..Limits::default()
    });
    let refused = [
        (
            "/v1/completions",
            json!({"prompt": "a", "frobnicate": 1}),
            "frobnicate",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "objekt"}}}}),
            "response_format.json_schema.schema",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "response_format": {"type": "yaml"}}),
            "response_format.type",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "structured_outputs": {"regex": "(open"}}),
            "structured_outputs.regex",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "structured_outputs": {"choice": []}}),
            "structured_outputs.choice",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "grammar": "root ::= \"x"}),
            "grammar",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "guided_regex": "a", "guided_choice": ["a"]}),
            "guided_choice",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "a"}], "functions": []}),
            "functions",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "a"}],
                   "tools": [{"type": "function", "function": {"name": "a b"}}]}),
            "tools[0].function.name",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "a"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "assistant", "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "tool", "content": "18C"}]}),
            "messages[0].tool_call_id",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "logit_bias": {"abc": 1}}),
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "logit_bias": {"-5": 1}}),
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "logit_bias": {"99999": 1}}),
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "logit_bias": {"5": 101}}),
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "logit_bias": {"5": "x"}}),
            "logit_bias",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "n": 2, "best_of": 3}),
            "best_of",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "suffix": "end"}),
            "suffix",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "echo": true, "logprobs": 1}),
            "echo",
        ),
        // 256 prompts × n=128: over the per-request cap, named with its numbers.
        (
            "/v1/completions",
            json!({"prompt": vec!["a"; 256], "n": 128}),
            "n",
        ),
        // Fits the per-request cap (256) but never the waiting queue (300): 400, not 429.
        (
            "/v1/completions",
            json!({"prompt": vec!["a"; 151], "n": 2}),
            "n",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x".repeat(1001)}),
            "prompt",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": vec![json!({"role": "user", "content": "a"}); 4]}),
            "messages",
        ),
    ];
    for (route, req, param) in refused {
        let (s, body) = call(&app, "POST", route, Some(req.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{req}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["param"], param, "{req}: {body}");
    }
    let (_, body) = call(
        &app,
        "POST",
        "/v1/completions",
        Some(json!({"prompt": vec!["a"; 256], "n": 128})),
    )
    .await;
    assert!(
        body.contains("32768 sequences") && body.contains("256"),
        "{body}"
    );
    let (_, body) = call(
        &app,
        "POST",
        "/v1/completions",
        Some(json!({"prompt": "a", "frobnicate": 1})),
    )
    .await;
    assert!(body.contains("--lenient-fields"), "{body}");
    // best_of equal to n, a user id and an empty suffix are fine.
    let ok =
        json!({"prompt": "a", "n": 2, "best_of": 2, "user": "u1", "suffix": "", "max_tokens": 2});
    let (s, body) = call(&app, "POST", "/v1/completions", Some(ok)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A lenient server ignores unknown keys, but still refuses what it does not implement.
    let lenient = app_with_limits(Limits {
        lenient_fields: true,
        ..Limits::default()
    });
    let (s, body) = call(
        &lenient,
        "POST",
        "/v1/completions",
        Some(json!({"prompt": "a", "max_tokens": 2, "frobnicate": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = call(
        &lenient,
        "POST",
        "/v1/chat/completions",
        Some(json!({"messages": [{"role": "user", "content": "a"}], "functions": []})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Every dialect of structured outputs constrains the reply (sampled, temperature 1, several
/// seeds, on a model of random weights that would otherwise babble).
#[tokio::test(flavor = "multi_thread")]
async fn structured_outputs_constrain_the_reply_in_every_dialect() {
    // A vocabulary with every byte, so that any text can be spelled.
    let t = Tiny {
        vocab: 320,
        ..Tiny::llama()
    };
    let app = app_of(t, TEMPLATE, None, Duration::ZERO, &[], Limits::default()).0;
    let schema = json!({"type": "object", "properties": {
        "colour": {"enum": ["red", "green"]}, "n": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["colour", "n"], "additionalProperties": false});
    let valid_json = |t: &str| {
        let v: Value = serde_json::from_str(t).unwrap_or_else(|e| panic!("{e}: {t:?}"));
        assert!(
            ["red", "green"].contains(&v["colour"].as_str().unwrap()),
            "{t}"
        );
        assert!((1..=9).contains(&v["n"].as_i64().unwrap()), "{t}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{t}");
    };
    let choice = |t: &str| assert!(["yes", "no"].contains(&t), "{t:?}");
    let digits = |t: &str| {
        assert!(
            t.len() == 3 && t.bytes().all(|b| b.is_ascii_digit()),
            "{t:?}"
        )
    };
    // A model of random weights never closes a free string: the reply is a JSON object's start.
    let object = |t: &str| assert!(t.starts_with('{'), "{t:?}");
    type Check<'a> = &'a dyn Fn(&str);
    let cases: Vec<(Value, Check)> = vec![
        (
            json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "c", "schema": schema, "strict": true}}}),
            &valid_json,
        ),
        (json!({"response_format": {"type": "json_object"}}), &object),
        (json!({"structured_outputs": {"json": schema}}), &valid_json),
        (
            json!({"structured_outputs": {"choice": ["yes", "no"]}}),
            &choice,
        ),
        (
            json!({"structured_outputs": {"regex": "[0-9]{3}"}}),
            &digits,
        ),
        (
            json!({"structured_outputs": {"grammar": "start: \"yes\" | \"no\""}}),
            &choice,
        ),
        (json!({"guided_choice": ["yes", "no"]}), &choice),
        (json!({"json_schema": schema}), &valid_json),
        (
            json!({"grammar": "root ::= answer\nanswer ::= \"yes\" | \"no\""}),
            &choice,
        ),
    ];
    for (fields, check) in &cases {
        for seed in 0..3 {
            let mut body = json!({"prompt": "Answer:", "max_tokens": 40, "temperature": 1.0,
                "seed": seed, "n": 2});
            body.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let (s, out) = call(&app, "POST", "/v1/completions", Some(body)).await;
            assert_eq!(s, StatusCode::OK, "{fields}: {out}");
            let v: Value = serde_json::from_str(&out).unwrap();
            for c in v["choices"].as_array().unwrap() {
                if fields
                    .get("response_format")
                    .is_none_or(|f| f["type"] != "json_object")
                {
                    assert_eq!(c["finish_reason"], "stop", "{fields}: {out}");
                }
                check(c["text"].as_str().unwrap());
            }
        }
    }
    // Chat completions take the same fields, streamed too.
    let body = json!({"messages": [{"role": "user", "content": "Pick"}], "stream": true,
        "temperature": 1.0, "max_tokens": 40,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}});
    let (s, out) = call(&app, "POST", "/v1/chat/completions", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let text: String = sse_chunks(&out)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    valid_json(&text);
    // Lookahead (collapse) decoding takes a constraint: the same text as constrained greedy.
    let greedy = json!({"prompt": "Answer:", "max_tokens": 40, "temperature": 0,
        "structured_outputs": {"json": schema}});
    let mut looked = greedy.clone();
    looked["lookahead"] = json!({"window": 4});
    let text = |body: &str| {
        let v: Value = serde_json::from_str(body).unwrap();
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let (_, a) = call(&app, "POST", "/v1/completions", Some(greedy)).await;
    let (s, b) = call(&app, "POST", "/v1/completions", Some(looked)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    valid_json(&text(&a));
    assert_eq!(text(&a), text(&b));
}

/// `logit_bias` moves the sampled token; `echo` puts the prompt before the text, streamed or not.
#[tokio::test(flavor = "multi_thread")]
async fn logit_bias_and_echo_are_implemented() {
    let app = app();
    let greedy =
        json!({"prompt": "once upon", "max_tokens": 4, "temperature": 0, "ignore_eos": true});
    let (_, plain) = call(&app, "POST", "/v1/completions", Some(greedy.clone())).await;
    // A bias of +100 on one token makes greedy choose it every time.
    let mut biased = greedy.clone();
    biased["logit_bias"] = json!({"77": 100});
    let (s, body) = call(&app, "POST", "/v1/completions", Some(biased)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let tok = |b: &str| {
        let v: Value = serde_json::from_str(b).unwrap();
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let (_, detok) = call(
        &app,
        "POST",
        "/detokenize",
        Some(json!({"tokens": [77, 77, 77, 77]})),
    )
    .await;
    let v: Value = serde_json::from_str(&detok).unwrap();
    assert_eq!(tok(&body), v["prompt"].as_str().unwrap());
    // A bias of -100 bans the greedy first token.
    let (_, first) = call(
        &app,
        "POST",
        "/tokenize",
        Some(json!({"prompt": tok(&plain), "add_special_tokens": false})),
    )
    .await;
    let first_id = serde_json::from_str::<Value>(&first).unwrap()["tokens"][0]
        .as_u64()
        .unwrap();
    let mut banned = greedy.clone();
    banned["logit_bias"] = json!({ first_id.to_string(): -100 });
    let (_, body) = call(&app, "POST", "/v1/completions", Some(banned)).await;
    assert_ne!(tok(&body), tok(&plain));
    // echo: the prompt, then the same completion.
    let mut echoed = greedy.clone();
    echoed["echo"] = json!(true);
    let (_, body) = call(&app, "POST", "/v1/completions", Some(echoed.clone())).await;
    assert_eq!(tok(&body), format!("once upon{}", tok(&plain)));
    echoed["stream"] = json!(true);
    let (_, body) = call(&app, "POST", "/v1/completions", Some(echoed)).await;
    let text: String = sse_chunks(&body)
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text, format!("once upon{}", tok(&plain)));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenize_and_detokenize_round_trip() {
    let app = app();
    let (s, body) = call(
        &app,
        "POST",
        "/tokenize",
        Some(json!({"prompt": "hello ab"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"], v["tokens"].as_array().unwrap().len());
    assert_eq!(v["max_model_len"], 256);
    let mut ids = v["tokens"].clone();
    ids.as_array_mut().unwrap().remove(0); // BOS
    let (s, body) = call(&app, "POST", "/detokenize", Some(json!({"tokens": ids}))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["prompt"],
        "hello ab"
    );
    let (s, body) = call(
        &app,
        "POST",
        "/detokenize",
        Some(json!({"tokens": [5, 96]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["param"],
        "tokens"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_and_body_limit() {
    let app = app_with_key(Some("sekrit"));
    let (s, _) = call(&app, "GET", "/health", None).await;
    assert_eq!(s, StatusCode::OK, "health stays open");
    let (s, body) = call(&app, "GET", "/v1/models", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["type"],
        "authentication_error"
    );
    // The scheme is case-insensitive; a refusal says which scheme to use.
    let good = ["Bearer sekrit", "bearer sekrit", "BEARER sekrit"];
    for auth in ["Bearer wrong", "sekrit", "Basic sekrit"]
        .iter()
        .chain(&good)
    {
        let req = Request::builder()
            .uri("/v1/models")
            .header("authorization", *auth)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        if good.contains(auth) {
            assert_eq!(resp.status(), StatusCode::OK, "{auth}");
        } else {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        }
    }
    for open in everett_server::OPEN_ROUTES {
        let (s, _) = call(&app, "GET", open, None).await;
        assert_eq!(s, StatusCode::OK, "{open} is open");
    }
    let big = "a".repeat(everett_server::BODY_LIMIT + 1);
    let req = Request::builder()
        .method("POST")
        .uri("/tokenize")
        .header("authorization", "Bearer sekrit")
        .header("content-type", "application/json")
        .body(Body::from(json!({"prompt": big}).to_string()))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_stream_cancels_its_request_and_frees_its_blocks() {
    let (app, handle) = app_and_handle(None, Duration::from_millis(5));
    let req = json!({"prompt": [2, 40], "max_tokens": 250, "stream": true, "ignore_eos": true});
    let http = Request::builder()
        .method("POST")
        .uri("/v1/completions")
        .header("content-type", "application/json")
        .body(Body::from(req.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(http).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {"));
    assert!(handle.stats().unwrap().used_blocks > 0);
    drop(body); // the client goes away after one chunk
    let mut stats = handle.stats().unwrap();
    for _ in 0..200 {
        if stats.running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = handle.stats().unwrap();
    }
    assert_eq!(
        stats.cancelled, 1,
        "the request was cancelled, not finished"
    );
    assert_eq!((stats.running, stats.used_blocks), (0, 0));
    // Others are served as usual.
    assert_still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completions_render_the_template_and_answer_as_the_assistant() {
    let app = app();
    let messages = json!([{"role": "system", "content": "be brief "},
                          {"role": "user", "content": [{"type": "text", "text": "hello"}]}]);
    let req = json!({"messages": messages, "max_completion_tokens": 4, "temperature": 0,
                     "logprobs": true, "top_logprobs": 2, "ignore_eos": true});
    let (s, body) = call(&app, "POST", "/v1/chat/completions", Some(req.clone())).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    let c = &v["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(c["logprobs"]["content"].as_array().unwrap().len(), 4);
    assert_eq!(
        c["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The prompt is the rendered template, BOS once: the same tokens through /tokenize.
    let text = "system: be brief\nuser: hello\nassistant:";
    let (_, t) = call(&app, "POST", "/tokenize", Some(json!({"prompt": text}))).await;
    let count = serde_json::from_str::<Value>(&t).unwrap()["count"].clone();
    assert_eq!(v["usage"]["prompt_tokens"], count);
    // Streamed: the role first, then content deltas adding up to the same message.
    let mut sreq = req;
    sreq["stream"] = json!(true);
    let (_, body) = call(&app, "POST", "/v1/chat/completions", Some(sreq)).await;
    let chunks: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, c["message"]["content"].as_str().unwrap());
    // Bad messages name the field.
    for (bad, param) in [
        (json!([]), "messages"),
        (
            json!([{"role": "bogus", "content": "x"}]),
            "messages[0].role",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url"}]}]),
            "messages[0].content",
        ),
    ] {
        let (s, body) = call(
            &app,
            "POST",
            "/v1/chat/completions",
            Some(json!({"messages": bad})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["error"]["param"],
            param
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_tokens_and_the_kv_cache() {
    let app = app();
    let req = json!({"prompt": [2, 40, 41], "max_tokens": 3, "n": 2, "ignore_eos": true});
    let (s, _) = call(&app, "POST", "/v1/completions", Some(req.clone())).await;
    assert_eq!(s, StatusCode::OK);
    let mut sreq = req;
    sreq["stream"] = json!(true);
    let (s, _) = call(&app, "POST", "/v1/completions", Some(sreq)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, text) = call(&app, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let value = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        line[name.len()..].trim().parse().unwrap()
    };
    assert_eq!(
        value("everett_requests_finished_total{reason=\"length\"}"),
        4.0
    );
    assert_eq!(value("everett_generation_tokens_total"), 12.0);
    assert_eq!(value("everett_prompt_tokens_total"), 6.0);
    assert_eq!(value("everett_time_to_first_token_seconds_count"), 2.0);
    assert_eq!(value("everett_e2e_request_latency_seconds_count"), 2.0);
    assert_eq!(value("everett_requests_running"), 0.0);
    assert_eq!(value("everett_kv_usage_ratio"), 0.0);
    // The second request's prompt was cached by the first.
    assert!(value("everett_prefix_cache_query_tokens_total") >= 6.0);
    // The same figures under vLLM's names, for dashboards and routers made for vLLM.
    let l = "{model_name=\"tiny\"}";
    assert_eq!(value(&format!("vllm:num_requests_running{l}")), 0.0);
    assert_eq!(value(&format!("vllm:num_requests_waiting{l}")), 0.0);
    assert_eq!(value(&format!("vllm:kv_cache_usage_perc{l}")), 0.0);
    assert_eq!(
        value(&format!("vllm:prefix_cache_queries_total{l}")),
        value("everett_prefix_cache_query_tokens_total")
    );
    assert_eq!(
        value(&format!("vllm:prefix_cache_hits_total{l}")),
        value("everett_prefix_cache_hit_tokens_total")
    );
    assert_eq!(value(&format!("vllm:num_preemptions_total{l}")), 0.0);
    assert_eq!(
        value(&format!("vllm:time_to_first_token_seconds_count{l}")),
        2.0
    );
    assert_eq!(
        value(&format!("vllm:e2e_request_latency_seconds_count{l}")),
        2.0
    );
    // 12 tokens over two requests: 10 gaps between them.
    assert_eq!(
        value(&format!("vllm:inter_token_latency_seconds_count{l}")),
        10.0
    );
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn explore_answers_the_cli_schema_and_streams_each_level_then_the_result() {
    let app = app();
    let req = json!({"prompt": "hello", "branches": 2, "width": 3, "steps": 4, "seed": 1});
    let (s, body) = call(&app, "POST", "/v1/explore", Some(req.clone())).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let whole: Value = serde_json::from_str(&body).unwrap();
    for key in [
        "prompt",
        "prompt_token_ids",
        "params",
        "nodes",
        "paths",
        "measured",
    ] {
        assert!(!whole[key].is_null(), "{key} missing: {body}");
    }
    assert_eq!(whole["params"]["width"], 3);
    let mut streamed = req;
    streamed["stream"] = json!(true);
    let (s, body) = call(&app, "POST", "/v1/explore", Some(streamed)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // SSE records: `event: NAME` then `data: JSON`.
    let mut events: Vec<(String, String)> = Vec::new();
    let mut name = String::new();
    for line in body.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            events.push((std::mem::take(&mut name), d.to_string()));
        }
    }
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let (result_name, result) = &events[events.len() - 2];
    assert_eq!(result_name, "result");
    let result: Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["nodes"], whole["nodes"], "same seed, same tree");
    let steps: Vec<Value> = events[..events.len() - 2]
        .iter()
        .map(|(n, d)| {
            assert_eq!(n, "step");
            serde_json::from_str(d).unwrap()
        })
        .collect();
    let announced: usize = steps
        .iter()
        .map(|s| {
            ["live", "pruned", "finished"]
                .iter()
                .map(|k| s[k].as_array().unwrap().len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(announced, whole["nodes"].as_array().unwrap().len() - 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn explore_refuses_bad_parameters_naming_them() {
    let app = app();
    let cases = [
        (json!({"prompt": "a", "width": 0}), "width"),
        (json!({"prompt": "a", "branches": 1000}), "branches"),
        (json!({"prompt": "a", "temperature": -1}), "temperature"),
        (json!({"prompt": "a", "measure": "best"}), "measure"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "a", "widht": 3}), "body"),
        (json!({"width": 3}), "body"),
    ];
    for (req, param) in cases {
        let (s, body) = call(&app, "POST", "/v1/explore", Some(req.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{req}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["param"], param, "{req}: {body}");
    }
    let (s, _) = call(
        &app,
        "POST",
        "/v1/explore",
        Some(json!({"prompt": "a", "model": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lookahead_answers_greedy_text_and_streams_a_pass_per_chunk() {
    let app = app();
    let mut multi = 0;
    for motif in [[40, 41, 42], [7, 8, 9], [50, 60, 50]] {
        let prompt: Vec<u32> = motif.iter().cycle().take(24).copied().collect();
        let base = json!({"prompt": prompt, "max_tokens": 40, "temperature": 0,
                          "ignore_eos": true, "logprobs": 2});
        let (s, plain) = call(&app, "POST", "/v1/completions", Some(base.clone())).await;
        assert_eq!(s, StatusCode::OK, "{plain}");
        let plain: Value = serde_json::from_str(&plain).unwrap();
        // Without lookahead a stream has one token per chunk, however fast they come.
        let mut req = base.clone();
        req["stream"] = json!(true);
        let (_, body) = call(&app, "POST", "/v1/completions", Some(req)).await;
        let singles = sse_chunks(&body)
            .iter()
            .filter_map(|c| {
                c["choices"][0]["logprobs"]["tokens"]
                    .as_array()
                    .map(Vec::len)
            })
            .filter(|&n| n == 1)
            .count();
        assert_eq!(singles, 40);
        for la in [
            json!(true),
            json!({"window": 4, "ngram": 3, "candidates": 2}),
        ] {
            let mut req = base.clone();
            req["lookahead"] = la;
            let (s, fast) = call(&app, "POST", "/v1/completions", Some(req.clone())).await;
            assert_eq!(s, StatusCode::OK, "{fast}");
            let fast: Value = serde_json::from_str(&fast).unwrap();
            assert_eq!(fast["choices"][0]["text"], plain["choices"][0]["text"]);
            assert_eq!(
                fast["choices"][0]["logprobs"],
                plain["choices"][0]["logprobs"]
            );
            req["stream"] = json!(true);
            let (_, body) = call(&app, "POST", "/v1/completions", Some(req)).await;
            let chunks = sse_chunks(&body);
            let text: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["text"].as_str())
                .collect();
            assert_eq!(text, plain["choices"][0]["text"].as_str().unwrap());
            let sizes: Vec<usize> = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array())
                .map(Vec::len)
                .collect();
            assert_eq!(sizes.iter().sum::<usize>(), 40);
            multi += sizes.iter().filter(|&&n| n > 1).count();
        }
    }
    assert!(multi > 0, "no pass committed several tokens");
    let chat = json!({"messages": [{"role": "user", "content": "hi hi hi hi"}], "max_tokens": 12,
                      "temperature": 0});
    let (_, plain) = call(&app, "POST", "/v1/chat/completions", Some(chat.clone())).await;
    let mut req = chat;
    req["lookahead"] = json!(true);
    let (s, fast) = call(&app, "POST", "/v1/chat/completions", Some(req)).await;
    assert_eq!(s, StatusCode::OK, "{fast}");
    let (plain, fast): (Value, Value) = (
        serde_json::from_str(&plain).unwrap(),
        serde_json::from_str(&fast).unwrap(),
    );
    assert_eq!(
        fast["choices"][0]["message"],
        plain["choices"][0]["message"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_lookahead_requests_name_the_field() {
    let app = app();
    let cases = [
        (json!({"lookahead": true}), "temperature"),
        (json!({"lookahead": true, "temperature": 0, "n": 2}), "n"),
        (json!({"lookahead": "yes", "temperature": 0}), "lookahead"),
        (
            json!({"lookahead": {"window": 0}, "temperature": 0}),
            "lookahead.window",
        ),
        (
            json!({"lookahead": {"window": 1000}, "temperature": 0}),
            "lookahead.window",
        ),
        (
            json!({"lookahead": {"ngram": "4"}, "temperature": 0}),
            "lookahead.ngram",
        ),
        (
            json!({"lookahead": {"mode": "magic"}, "temperature": 0}),
            "lookahead.mode",
        ),
        (
            json!({"lookahead": {"bogus": 1}, "temperature": 0}),
            "lookahead.bogus",
        ),
    ];
    for (mut req, field) in cases {
        req["prompt"] = json!("hello");
        let (s, body) = call(&app, "POST", "/v1/completions", Some(req)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{field}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["param"], field, "{body}");
    }
    assert_still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_template_returns_the_rendered_prompt() {
    let app = app();
    let msgs =
        json!([{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "hi"}]);
    let (s, body) = call(
        &app,
        "POST",
        "/apply-template",
        Some(json!({"messages": msgs})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["prompt"], "<bos>system: Be brief.\nuser: hi\nassistant:");
    // A bad message is a 400 naming it, and the server keeps serving.
    let bad = json!({"messages": [{"role": "bogus", "content": "x"}]});
    let (s, body) = call(&app, "POST", "/apply-template", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("bogus") && body.contains("messages"),
        "{body}"
    );
    assert_still_serving(&app).await;
}

/// A reasoning model's template opens a thought for the answer: what the model writes before
/// `</think>` is `reasoning_content`, the rest `content`, in one reply and streamed.
#[tokio::test(flavor = "multi_thread")]
async fn a_reasoning_models_thought_goes_to_reasoning_content() {
    let thinking = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
assistant: <think>\n{# the model closes it: </think> #}";
    let t = Tiny {
        vocab: 320,
        ..Tiny::llama()
    };
    let app = app_of(t, thinking, None, Duration::ZERO, &[], Limits::default()).0;
    // A constraint makes the random model think, close the thought and answer.
    let body = |stream: bool, seed: u64| {
        json!({"messages": [{"role": "user", "content": "2+2?"}], "temperature": 1.0,
            "seed": seed, "max_tokens": 40, "stream": stream,
            "structured_outputs": {"regex": "[ab]{2,6}</think>[xy]{1,4}"}})
    };
    let is = |s: &str, set: &str, lo: usize, hi: usize| {
        (lo..=hi).contains(&s.len()) && s.chars().all(|c| set.contains(c))
    };
    for seed in 0..4 {
        let (s, out) = call(
            &app,
            "POST",
            "/v1/chat/completions",
            Some(body(false, seed)),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let msg = &v["choices"][0]["message"];
        let (thought, content) = (
            msg["reasoning_content"].as_str().unwrap(),
            msg["content"].as_str().unwrap(),
        );
        assert!(is(thought, "ab", 2, 6) && is(content, "xy", 1, 4), "{out}");
        let (s, out) = call(&app, "POST", "/v1/chat/completions", Some(body(true, seed))).await;
        assert_eq!(s, StatusCode::OK, "{out}");
        let chunks = sse_chunks(&out);
        let join = |field: &str| -> String {
            chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"][field].as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(
            (join("reasoning_content"), join("content")),
            (thought.to_string(), content.to_string())
        );
    }
    // A template without thinking tags leaves the text alone.
    let (s, out) = call(
        &app_with_key(None),
        "POST",
        "/v1/chat/completions",
        Some(json!({
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        serde_json::from_str::<Value>(&out).unwrap()["choices"][0]["message"]
            .get("reasoning_content")
            .is_none(),
        "{out}"
    );
}

/// `/v1/explore` takes the same constraint: every path of the tree satisfies it.
#[tokio::test(flavor = "multi_thread")]
async fn an_exploration_takes_a_constraint() {
    let t = Tiny {
        vocab: 320,
        ..Tiny::llama()
    };
    let app = app_of(t, TEMPLATE, None, Duration::ZERO, &[], Limits::default()).0;
    let body = json!({"prompt": "Pick:", "branches": 3, "width": 4, "steps": 6,
        "structured_outputs": {"choice": ["ab", "ba", "abc"]}});
    let (s, out) = call(&app, "POST", "/v1/explore", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let paths = v["paths"].as_array().unwrap();
    assert!(!paths.is_empty(), "{out}");
    for p in paths {
        assert!(
            ["ab", "ba", "abc"].contains(&p["text"].as_str().unwrap()),
            "{p}"
        );
    }
    let bad = json!({"prompt": "Pick:", "structured_outputs": {"regex": "(x"}});
    let (s, out) = call(&app, "POST", "/v1/explore", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["param"], "structured_outputs.regex", "{out}");
}
