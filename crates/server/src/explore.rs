//! `POST /v1/explore`: a superposition exploration as one engine request, so its forward passes
//! are shared with everyone else's. The body takes `everett explore`'s parameters by the same
//! names (`prompt`, `branches`, `width`, `steps`, `temperature`, `min_p`, `measure`, `seed`,
//! `stochastic`, `alpha`, `bifurcation_gap`, `stop`), and the reply is the JSON that
//! `everett explore --json` prints. With `"stream": true` it is SSE: one `step` event per level
//! (`ExploreStep`: the expanded nodes and the new live, pruned and finished ones), then a
//! `result` event with the whole exploration, then `data: [DONE]`. `structured_outputs` or
//! `response_format` (as in the generation routes) constrain every path: the tree holds only
//! futures that satisfy the constraint.

use crate::error::ApiError;
use crate::reply::next_event;
use crate::wire::{off_executor, parse, prompt_ids, Stop};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use everett_engine::engine::{Event, Events, ExploreRequest, Task};
use everett_engine::scheduler::Admission;
use everett_engine::superposition::{ExploreParams, Measure};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;

/// The body; absent fields take `everett explore`'s defaults. Unknown fields are refused: a
/// misspelt parameter would otherwise silently explore a different tree.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExploreBody {
    model: Option<String>,
    prompt: String,
    branches: Option<usize>,
    width: Option<usize>,
    steps: Option<usize>,
    temperature: Option<f32>,
    min_p: Option<f32>,
    measure: Option<String>,
    seed: Option<u64>,
    #[serde(default)]
    stochastic: bool,
    alpha: Option<f32>,
    bifurcation_gap: Option<f32>,
    stop: Option<Stop>,
    response_format: Option<serde_json::Value>,
    structured_outputs: Option<serde_json::Value>,
    #[serde(default)]
    stream: bool,
    /// Lower runs first (vLLM's meaning); 0 by default.
    priority: Option<i64>,
}

impl ExploreBody {
    fn to_request(&self, st: &AppState) -> Result<ExploreRequest, ApiError> {
        if let Some(m) = &self.model {
            crate::wire::check_model(st, m)?;
        }
        let d = ExploreParams::default();
        let measure = match &self.measure {
            None => d.measure,
            Some(m) => Measure::parse(m).ok_or_else(|| {
                ApiError::invalid(
                    "measure",
                    format!("`measure` must be max, sample or all, got {m:?}"),
                )
            })?,
        };
        let params = ExploreParams {
            branches: self.branches.unwrap_or(d.branches),
            width: self.width.unwrap_or(d.width),
            steps: self.steps.unwrap_or(d.steps),
            temperature: self.temperature.unwrap_or(d.temperature),
            min_p: self.min_p.unwrap_or(d.min_p),
            stochastic: self.stochastic,
            seed: self.seed.unwrap_or(d.seed),
            measure,
            alpha: self.alpha.unwrap_or(d.alpha),
            bifurcation_gap: self.bifurcation_gap.unwrap_or(d.bifurcation_gap),
            stop: self.stop.as_ref().map(Stop::to_vec).unwrap_or_default(),
            no_share: false,
        };
        params.validate()?;
        st.cfg
            .limits
            .check_seqs(params.width, &format!("width={}", params.width))?;
        st.cfg.limits.check_bytes(self.prompt.len(), "prompt")?;
        let fields = crate::structured::Fields::objects(
            self.response_format.clone(),
            self.structured_outputs.clone(),
        );
        let constraint = fields
            .asked()?
            .map(|a| crate::structured::compile(st, &a))
            .transpose()?;
        Ok(ExploreRequest {
            prompt: self.prompt.clone(),
            prompt_ids: prompt_ids(st, &self.prompt),
            params,
            constraint,
        })
    }
}

pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let state = st.clone();
    let (body, req) = off_executor(move || {
        let body: ExploreBody = parse(&body, "exploration request")?;
        let req = body.to_request(&state)?;
        Ok((body, req))
    })
    .await?;
    let adm = Admission {
        priority: body.priority.unwrap_or(0),
        group: None,
    };
    let (_, mut events) = st.engine.submit_with(Task::Explore(req), adm);
    let first = next_event(&mut events).await?;
    if body.stream {
        return Ok(Sse::new(stream::unfold(Some((Some(first), events)), next_sse)).into_response());
    }
    // Steps are only for streams: wait for the result (an error comes back as one).
    let mut e = first;
    loop {
        if let Event::Explored(x) = e {
            return Ok(axum::Json(x).into_response());
        }
        e = next_event(&mut events).await?;
    }
}

/// Where the stream stands: the event already received, and the rest; `None` after `[DONE]`.
type Streaming = Option<(Option<Event>, Events)>;

async fn next_sse(state: Streaming) -> Option<(Result<SseEvent, Infallible>, Streaming)> {
    let (pending, mut events) = state?;
    let e = match pending {
        Some(e) => Some(e),
        None => events.recv().await,
    };
    let out = match e {
        Some(Event::ExploreStep(s)) => named("step", &*s),
        Some(Event::Explored(x)) => named("result", &*x),
        Some(Event::Error(e)) => {
            let e = ApiError::from(e);
            let v = serde_json::json!({"error": {"message": e.message, "type": e.kind}});
            return Some((
                Ok(SseEvent::default().event("error").data(v.to_string())),
                None,
            ));
        }
        Some(_) => SseEvent::default().comment("ignored"),
        None => return Some((Ok(SseEvent::default().data("[DONE]")), None)),
    };
    Some((Ok(out), Some((None, events))))
}

/// An SSE event called `name` carrying `v` as JSON (non-finite numbers become null).
fn named(name: &str, v: &impl Serialize) -> SseEvent {
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(v).unwrap_or_default())
}
