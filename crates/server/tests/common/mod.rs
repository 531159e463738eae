//! What the HTTP API tests share: a router over a tiny model, a request through it, and the
//! chunks of an SSE body.

#![allow(dead_code)] // each test file uses its own part

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::Router;
use everett_engine::engine::handle::{spawn, EngineHandle};
use everett_engine::engine::{Engine, EngineConfig};
use everett_engine::gguf::GgufFile;
use everett_engine::model::Model;
use everett_engine::testutil::{tiny_model, Slow, Tiny};
use everett_engine::tokenizer::Tokenizer;
use everett_server::{router, ChatTemplate, Limits, ServerConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A small Jinja chat template in the Hugging Face style (Python string methods included).
pub const TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{% if m.role == 'bogus' %}\
{{ raise_exception('bad role') }}{% endif %}{{ m.role }}: {{ m.content.strip() }}\n{% endfor %}\
{% if add_generation_prompt %}assistant:{% endif %}";

/// The router over a tiny model of shape `t`.
pub fn app_of(
    t: Tiny,
    template: &str,
    api_key: Option<&str>,
    slow: Duration,
    faults: &[u64],
    limits: Limits,
) -> (Router, EngineHandle) {
    let f = GgufFile::from_bytes(tiny_model(&t, 42)).unwrap();
    let model = Model::from_gguf(&f, 1).unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(&f).unwrap());
    let context = model.config.context_length;
    let mut cfg = EngineConfig::default();
    cfg.scheduler.max_waiting = limits.max_waiting;
    let mut engine = Engine::new(Slow(model, slow), tok.clone(), cfg);
    engine.inject_faults(faults);
    let (handle, _thread) = spawn(engine);
    let app = router(
        handle.clone(),
        ServerConfig {
            model_name: "tiny".into(),
            tokenizer: tok,
            context,
            api_key: api_key.map(str::to_string),
            chat_template: Some(ChatTemplate::jinja(template.into()).unwrap()),
            limits,
            overflow: Default::default(),
        },
    );
    (app, handle)
}

/// One request through the router: its status and body.
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The data lines of an SSE body, parsed, without the final `[DONE]`.
pub fn sse_chunks(body: &str) -> Vec<Value> {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}
