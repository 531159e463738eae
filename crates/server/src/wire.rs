//! The request fields that completions and chat completions share, and their conversion into an
//! engine `Request`: OpenAI's names and defaults (temperature 1, max_tokens 16), vLLM's
//! extensions (`top_k`, `min_p`, `repetition_penalty`, `ignore_eos`, `min_tokens`, `priority`),
//! each range checked here or by the engine so that the error names the field.
//!
//! Every field is either implemented or refused: a body is checked against its route's list of
//! fields before it is read, and an unknown key is a 400 that names it (`--lenient-fields`
//! ignores unknown keys instead, with a warning in the log). Fields of OpenAI's API that this
//! server does not implement are refused even then: ignoring `functions` would answer something
//! other than what was asked. The structured-output fields are read in `structured`.

use crate::error::ApiError;
use crate::structured;
use crate::AppState;
use everett_engine::collapse::{CollapseParams, Mode, MAX_CANDIDATES, MAX_NGRAM, MAX_WINDOW};
use everett_engine::constraint::Grammar;
use everett_engine::generate::{Request, MAX_SAMPLES};
use everett_engine::overflow::{Overflow, Stream};
use everett_engine::sample::SamplingParams;
use everett_engine::scheduler::Admission;
use serde::Deserialize;

/// Most tokens one streaming sample may produce (`max_tokens` with `context_overflow: stream`).
pub const MAX_STREAMED_TOKENS: i64 = 1 << 24;

/// Most alternatives per token that `logprobs` / `top_logprobs` may ask for.
pub const MAX_LOGPROBS: i64 = 20;

/// The fields of `Common`, which both generation routes take.
pub const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
    "top_k",
    "min_p",
    "repetition_penalty",
    "ignore_eos",
    "min_tokens",
    "lookahead",
    "logit_bias",
    "priority",
    "context_overflow",
    // An end-user id for the operator's abuse monitoring: accepted, nothing to do.
    "user",
];

/// OpenAI fields refused even with `--lenient-fields`: the deprecated `functions` form of tool
/// calling (send `tools`), which answering without would be a silent wrong answer.
const NOT_IMPLEMENTED: &[&str] = &["functions", "function_call"];
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// A prompt text's tokens (BOS first when the model wants one); an empty text gives no tokens,
/// so the engine refuses it as an empty prompt rather than running BOS alone.
pub fn prompt_ids(st: &AppState, text: &str) -> Vec<u32> {
    if text.is_empty() {
        return Vec::new();
    }
    st.cfg.tokenizer.encode(text, true, false)
}

/// A 404 unless `model` names the served model.
pub fn check_model(st: &AppState, model: &str) -> Result<(), ApiError> {
    if model == st.cfg.model_name {
        return Ok(());
    }
    Err(ApiError::not_found(
        "model",
        format!(
            "the model `{model}` does not exist; this server serves `{}`",
            st.cfg.model_name
        ),
    ))
}

#[derive(Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<i64>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub ignore_eos: bool,
    pub min_tokens: Option<i64>,
    /// everett's extension: collapse (lookahead) decoding, `true` or
    /// `{"window", "ngram", "candidates", "mode"}`.
    pub lookahead: Option<serde_json::Value>,
    /// Token id (as a string, OpenAI's form) → bias in -100..=100.
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// Lower runs first (vLLM's meaning); 0 by default.
    pub priority: Option<i64>,
    /// everett's extension: `"stop"` at the end of the context, or `"stream"` past it
    /// (StreamingLLM); the server's `--context-overflow` by default.
    pub context_overflow: Option<String>,
    #[allow(dead_code)] // accepted and ignored (see COMMON_FIELDS)
    pub user: Option<String>,
    /// `response_format`, `structured_outputs` and the other constraint fields.
    #[serde(flatten)]
    pub structured: structured::Fields,
}

/// The JSON body as `T`, or a 400 that quotes serde's account of what does not fit.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the request body is not a valid {what}: {e}"),
        )
    })
}

/// The JSON object `body` as `T` once its keys are checked against `fields` (`COMMON_FIELDS`
/// are always allowed): an unknown key is a 400 naming it, unless the server is lenient.
pub fn parse_fields<T: serde::de::DeserializeOwned>(
    st: &AppState,
    body: &[u8],
    what: &str,
    fields: &[&str],
) -> Result<T, ApiError> {
    let mut v: serde_json::Value = parse(body, what)?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ApiError::invalid(
            "body",
            format!("the request body must be a JSON object (a {what})"),
        ));
    };
    let known = |k: &str| {
        fields.contains(&k) || COMMON_FIELDS.contains(&k) || structured::FIELDS.contains(&k)
    };
    let unknown: Vec<String> = obj.keys().filter(|k| !known(k)).cloned().collect();
    for k in unknown {
        if NOT_IMPLEMENTED.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                &k,
                format!(
                    "`{k}` (the deprecated form of tool calling) is not supported; send `tools`"
                ),
            ));
        }
        if !st.cfg.limits.lenient_fields {
            return Err(ApiError::invalid(
                &k,
                format!("unknown field `{k}` in the {what} (start the server with --lenient-fields to ignore unknown fields)"),
            ));
        }
        tracing::warn!(field = %k, "ignoring an unknown request field (--lenient-fields)");
        obj.remove(&k);
    }
    serde_json::from_value(v).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("the request body is not a valid {what}: {e}"),
        )
    })
}

/// Runs `f` on the blocking thread pool: JSON parsing of large bodies, template rendering and
/// tokenization never hold up the async executor that serves every other connection.
pub async fn off_executor<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::from(everett_engine::Error::Internal(e.to_string())))?
}

/// `v` (or `default`) when it lies in `lo..=hi`, else a 400 naming `param`.
pub fn count(
    param: &str,
    v: Option<i64>,
    default: i64,
    lo: i64,
    hi: i64,
) -> Result<usize, ApiError> {
    let v = v.unwrap_or(default);
    if v < lo || v > hi {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be in {lo}..={hi}, got {v}"),
        ));
    }
    Ok(v as usize)
}

impl Common {
    /// `None` for one JSON reply; `Some(include_usage)` for a stream.
    pub fn stream_mode(&self) -> Option<bool> {
        let usage = self
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage);
        self.stream.then_some(usage)
    }

    /// A 404 unless `model` is absent or names the served model.
    pub fn check_model(&self, st: &AppState) -> Result<(), ApiError> {
        self.model.as_deref().map_or(Ok(()), |m| check_model(st, m))
    }

    /// The request's constraint, compiled (a blocking call: run it off the executor).
    pub fn constraint(&self, st: &AppState) -> Result<Option<Grammar>, ApiError> {
        self.structured
            .asked()?
            .map(|a| structured::compile(st, &a))
            .transpose()
    }

    /// The engine request for `prompt_ids`; `logprobs`: `None` when the client asked for no
    /// logprobs, else how many alternatives per token; `max_tokens` overrides the field of
    /// that name; `constraint` from `constraint()`.
    pub fn request(
        &self,
        st: &AppState,
        prompt_ids: Vec<u32>,
        logprobs: Option<usize>,
        max_tokens: Option<i64>,
        constraint: Option<Grammar>,
    ) -> Result<Request, ApiError> {
        let collapse = self
            .lookahead
            .as_ref()
            .map(lookahead)
            .transpose()?
            .flatten();
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: count("top_k", self.top_k.map(|k| k.max(0)), 0, 0, i64::MAX)?,
            min_p: self.min_p.unwrap_or(0.0),
            repeat_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed.unwrap_or(0),
            top_logprobs: logprobs.unwrap_or(0),
            // Nobody reads the logprob and entropy of a request that wants no logprobs: its
            // greedy steps skip that pass over the vocabulary (collapse turns it back on).
            stats: logprobs.is_some(),
            ..SamplingParams::default()
        };
        let stop_strings = self.stop.as_ref().map(Stop::to_vec).unwrap_or_default();
        let overflow = self.overflow(st)?;
        let ctx = st.cfg.context as i64;
        // A streaming sample may go on past the context.
        let most = match overflow {
            Overflow::Stop => ctx,
            Overflow::Stream(_) => MAX_STREAMED_TOKENS,
        };
        Ok(Request {
            prompt_ids,
            sampling,
            max_tokens: count("max_tokens", max_tokens.or(self.max_tokens), 16, 1, most)?,
            stop_strings,
            stop_ids: Vec::new(),
            n: count("n", self.n, 1, 1, MAX_SAMPLES as i64)?,
            ignore_eos: self.ignore_eos,
            min_tokens: count("min_tokens", self.min_tokens, 0, 0, ctx)?,
            collapse,
            logit_bias: self.logit_bias()?,
            constraint,
            overflow,
        })
    }

    /// `context_overflow`, or the server's default; with `"stream"` the server's window.
    fn overflow(&self, st: &AppState) -> Result<Overflow, ApiError> {
        match self.context_overflow.as_deref() {
            None => Ok(st.cfg.overflow),
            Some("stop") => Ok(Overflow::Stop),
            Some("stream") => Ok(match st.cfg.overflow {
                Overflow::Stream(s) => Overflow::Stream(s),
                Overflow::Stop => Overflow::Stream(Stream::default()),
            }),
            Some(other) => Err(ApiError::invalid(
                "context_overflow",
                format!("`context_overflow` is \"stop\" or \"stream\", got {other:?}"),
            )),
        }
    }

    /// How the engine queues this request's prompts: its priority, and one group for all of
    /// them so that they take turns with other clients' requests.
    pub fn admission(&self, group: u64) -> Admission {
        Admission {
            priority: self.priority.unwrap_or(0),
            group: Some(group),
        }
    }

    /// `logit_bias` as (id, bias); keys must be token ids, values numbers (the engine checks
    /// the ids against the vocabulary and the range of the biases).
    fn logit_bias(&self) -> Result<Vec<(u32, f32)>, ApiError> {
        let Some(map) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        map.iter()
            .map(|(k, v)| {
                let id = k.parse::<u32>().map_err(|_| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("`logit_bias` keys are token ids; {k:?} is not one"),
                    )
                })?;
                let bias = v.as_f64().ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("the bias of token {id} must be a number, not {v}"),
                    )
                })?;
                Ok((id, bias as f32))
            })
            .collect()
    }
}

/// The `lookahead` field: `false`/`null` (off), `true` (the defaults) or an object of
/// parameters, each checked by name.
fn lookahead(v: &serde_json::Value) -> Result<Option<CollapseParams>, ApiError> {
    use serde_json::Value;
    let fields =
        match v {
            Value::Null | Value::Bool(false) => return Ok(None),
            Value::Bool(true) => return Ok(Some(CollapseParams::default())),
            Value::Object(m) => m,
            _ => return Err(ApiError::invalid(
                "lookahead",
                "`lookahead` must be true, false or an object like {\"window\": 8, \"ngram\": 4}",
            )),
        };
    let mut p = CollapseParams::default();
    for (k, v) in fields {
        let name = format!("lookahead.{k}");
        let int = |lo: usize, hi: usize| {
            let n = v
                .as_i64()
                .ok_or_else(|| ApiError::invalid(&name, format!("`{name}` must be an integer")))?;
            count(&name, Some(n), 0, lo as i64, hi as i64)
        };
        match k.as_str() {
            "window" => p.window = int(1, MAX_WINDOW)?,
            "ngram" => p.ngram = int(2, MAX_NGRAM)?,
            "candidates" => p.candidates = int(1, MAX_CANDIDATES)?,
            "fast_forward" => {
                p.fast_forward = v.as_bool().ok_or_else(|| {
                    ApiError::invalid(&name, "`lookahead.fast_forward` must be true or false")
                })?
            }
            "mode" => {
                p.mode = match v.as_str() {
                    Some("lookahead") => Mode::Lookahead,
                    Some("jacobi") => Mode::Jacobi,
                    _ => {
                        return Err(ApiError::invalid(
                            &name,
                            "`lookahead.mode` must be \"lookahead\" or \"jacobi\"",
                        ))
                    }
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    &name,
                    format!("unknown field `{k}` in `lookahead` (window, ngram, candidates, mode, fast_forward)"),
                ))
            }
        }
    }
    Ok(Some(p))
}
