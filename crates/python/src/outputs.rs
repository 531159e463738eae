//! What a generation returns, with vLLM's names: `RequestOutput` (the prompt and one
//! `CompletionOutput` per sample), each token's `Logprob`s, and `Collector`, which folds a
//! request's engine events into them. A streamed delta is the same `RequestOutput` holding only
//! what is new.

use everett_engine::engine::Event;
use everett_engine::generate::TokenInfo;
use everett_engine::tokenizer::Tokenizer;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// One token's log-probability (vLLM's `Logprob`): `rank` is its place in the model's raw
/// distribution (1 = most likely), `None` when it was not among the reported alternatives.
#[pyclass(module = "everett", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct Logprob {
    pub logprob: f64,
    pub rank: Option<usize>,
    pub decoded_token: String,
}

#[pymethods]
impl Logprob {
    fn __repr__(&self) -> String {
        format!(
            "Logprob(logprob={}, rank={}, decoded_token={:?})",
            self.logprob,
            self.rank.map_or("None".into(), |r| r.to_string()),
            self.decoded_token
        )
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.logprob == other.logprob
            && self.rank == other.rank
            && self.decoded_token == other.decoded_token
    }
}

/// One sample's completion (vLLM's `CompletionOutput`), plus each token's entropy.
#[pyclass(module = "everett", frozen)]
#[derive(Clone, Debug, Default)]
pub struct CompletionOutput {
    #[pyo3(get)]
    pub index: usize,
    #[pyo3(get)]
    pub text: String,
    #[pyo3(get)]
    pub token_ids: Vec<u32>,
    /// Sum of the tokens' log-probabilities; `None` unless logprobs were asked for.
    #[pyo3(get)]
    pub cumulative_logprob: Option<f64>,
    /// Per token: the chosen token first, then the alternatives by rank; `None` unless asked.
    pub logprobs: Option<Vec<Vec<(u32, Logprob)>>>,
    /// Per token: the entropy (nats) of the model's raw distribution; `None` unless logprobs
    /// were asked for.
    #[pyo3(get)]
    pub entropies: Option<Vec<f32>>,
    /// "stop" or "length"; `None` while it runs.
    #[pyo3(get)]
    pub finish_reason: Option<String>,
}

#[pymethods]
impl CompletionOutput {
    /// `list[dict[int, Logprob]]`, each dict in the order above.
    #[getter]
    fn logprobs<'py>(&self, py: Python<'py>) -> PyResult<Option<Vec<Bound<'py, PyDict>>>> {
        let Some(steps) = &self.logprobs else {
            return Ok(None);
        };
        steps
            .iter()
            .map(|step| {
                let d = PyDict::new(py);
                for (id, lp) in step {
                    d.set_item(*id, lp.clone())?;
                }
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()
            .map(Some)
    }

    /// Whether the sample has ended.
    fn finished(&self) -> bool {
        self.finish_reason.is_some()
    }

    fn __repr__(&self) -> String {
        format!(
            "CompletionOutput(index={}, text={:?}, token_ids={:?}, finish_reason={})",
            self.index,
            self.text,
            self.token_ids,
            self.finish_reason
                .as_deref()
                .map_or("None".into(), |r| format!("{r:?}"))
        )
    }
}

/// A request's result (vLLM's `RequestOutput`).
#[pyclass(module = "everett", get_all, frozen)]
#[derive(Clone, Debug)]
pub struct RequestOutput {
    pub request_id: String,
    /// The prompt's text; `None` when it was given as token ids.
    pub prompt: Option<String>,
    pub prompt_token_ids: Vec<u32>,
    pub outputs: Vec<CompletionOutput>,
    /// Whether every sample has ended.
    pub finished: bool,
}

#[pymethods]
impl RequestOutput {
    fn __repr__(&self) -> String {
        format!(
            "RequestOutput(request_id={:?}, prompt={}, prompt_token_ids=[{} ids], outputs=[{}], finished={})",
            self.request_id,
            self.prompt.as_deref().map_or("None".into(), |p| format!("{p:?}")),
            self.prompt_token_ids.len(),
            self.outputs
                .iter()
                .map(|o| o.__repr__())
                .collect::<Vec<_>>()
                .join(", "),
            if self.finished { "True" } else { "False" }
        )
    }
}

/// Folds one request's events into its outputs.
pub struct Collector {
    pub request_id: String,
    pub prompt: Option<String>,
    pub prompt_ids: Vec<u32>,
    /// Whether logprobs (and entropies) are reported.
    pub logprobs: bool,
    pub samples: Vec<CompletionOutput>,
}

impl Collector {
    pub fn new(
        request_id: String,
        prompt: Option<String>,
        prompt_ids: Vec<u32>,
        n: usize,
        logprobs: bool,
    ) -> Self {
        let samples = (0..n)
            .map(|index| CompletionOutput {
                index,
                cumulative_logprob: logprobs.then_some(0.0),
                logprobs: logprobs.then(Vec::new),
                entropies: logprobs.then(Vec::new),
                ..CompletionOutput::default()
            })
            .collect();
        Self {
            request_id,
            prompt,
            prompt_ids,
            logprobs,
            samples,
        }
    }

    /// Whether every sample has ended.
    pub fn finished(&self) -> bool {
        self.samples.iter().all(|s| s.finish_reason.is_some())
    }

    /// Folds `e` in; returns what it added to its sample (the delta a stream yields), `None`
    /// for events that add nothing to a completion.
    pub fn absorb(&mut self, tok: &Tokenizer, e: &Event) -> Option<CompletionOutput> {
        let logprobs = self.logprobs;
        match e {
            Event::Token { index, token } => {
                let s = self.samples.get_mut(*index)?;
                let mut delta = CompletionOutput {
                    index: *index,
                    text: token.text.clone(),
                    token_ids: vec![token.id],
                    ..CompletionOutput::default()
                };
                s.text.push_str(&token.text);
                s.token_ids.push(token.id);
                if logprobs {
                    let step = token_logprobs(tok, token);
                    let lp = token.logprob as f64;
                    *s.cumulative_logprob.get_or_insert(0.0) += lp;
                    s.logprobs.get_or_insert_with(Vec::new).push(step.clone());
                    s.entropies.get_or_insert_with(Vec::new).push(token.entropy);
                    delta.cumulative_logprob = s.cumulative_logprob;
                    delta.logprobs = Some(vec![step]);
                    delta.entropies = Some(vec![token.entropy]);
                }
                Some(delta)
            }
            Event::Finished { index, reason } => {
                let s = self.samples.get_mut(*index)?;
                s.finish_reason = Some(reason.as_str().to_string());
                Some(CompletionOutput {
                    index: *index,
                    cumulative_logprob: s.cumulative_logprob,
                    finish_reason: s.finish_reason.clone(),
                    ..CompletionOutput::default()
                })
            }
            _ => None,
        }
    }

    /// The whole result so far.
    pub fn output(&self) -> RequestOutput {
        self.with_outputs(self.samples.clone())
    }

    /// A `RequestOutput` of this request holding `outputs` (a stream's delta).
    pub fn with_outputs(&self, outputs: Vec<CompletionOutput>) -> RequestOutput {
        RequestOutput {
            request_id: self.request_id.clone(),
            prompt: self.prompt.clone(),
            prompt_token_ids: self.prompt_ids.clone(),
            outputs,
            finished: self.finished(),
        }
    }
}

/// The chosen token first, then the alternatives the engine reported, best first.
fn token_logprobs(tok: &Tokenizer, t: &TokenInfo) -> Vec<(u32, Logprob)> {
    let piece = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
    let rank = t.top.iter().position(|&(id, _)| id == t.id).map(|r| r + 1);
    let mut step = vec![(
        t.id,
        Logprob {
            logprob: t.logprob as f64,
            rank,
            decoded_token: piece(t.id),
        },
    )];
    for (r, &(id, lp)) in t.top.iter().enumerate() {
        if id != t.id {
            step.push((
                id,
                Logprob {
                    logprob: lp as f64,
                    rank: Some(r + 1),
                    decoded_token: piece(id),
                },
            ));
        }
    }
    step
}
