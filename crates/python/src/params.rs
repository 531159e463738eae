//! `SamplingParams`: how to sample, with vLLM's names, defaults and meanings (temperature 1,
//! 16 tokens, `top_k` 0 or -1 for all, `seed` None for a fresh random seed, `logprobs` None for
//! no log-probabilities). Numbers are taken as Python gives them and checked here or by the
//! engine, so a negative count is a `ValueError` naming the field, never an overflow.

use crate::errors::bad;
use everett_engine::generate::Request;
use everett_engine::sample::SamplingParams as Sampling;
use pyo3::prelude::*;

/// One stop string or several.
#[derive(FromPyObject)]
pub enum Strings {
    One(String),
    Many(Vec<String>),
}

impl Strings {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Strings::One(s) => vec![s],
            Strings::Many(v) => v,
        }
    }
}

/// How to sample a completion (vLLM's `SamplingParams`).
#[pyclass(module = "everett", get_all, set_all)]
#[derive(Clone, Debug)]
pub struct SamplingParams {
    pub n: i64,
    pub max_tokens: i64,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: i64,
    pub min_p: f64,
    pub repetition_penalty: f64,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<i64>,
    pub logprobs: Option<i64>,
    pub ignore_eos: bool,
    pub min_tokens: i64,
}

#[pymethods]
impl SamplingParams {
    #[new]
    #[pyo3(signature = (*, n=1, max_tokens=16, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
        repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, seed=None,
        stop=None, stop_token_ids=None, logprobs=None, ignore_eos=false, min_tokens=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        n: i64,
        max_tokens: i64,
        temperature: f64,
        top_p: f64,
        top_k: i64,
        min_p: f64,
        repetition_penalty: f64,
        presence_penalty: f64,
        frequency_penalty: f64,
        seed: Option<i64>,
        stop: Option<Strings>,
        stop_token_ids: Option<Vec<i64>>,
        logprobs: Option<i64>,
        ignore_eos: bool,
        min_tokens: i64,
    ) -> Self {
        Self {
            n,
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            repetition_penalty,
            presence_penalty,
            frequency_penalty,
            seed,
            stop: stop.map(Strings::into_vec).unwrap_or_default(),
            stop_token_ids: stop_token_ids.unwrap_or_default(),
            logprobs,
            ignore_eos,
            min_tokens,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "SamplingParams(n={}, max_tokens={}, temperature={}, top_p={}, top_k={}, min_p={}, \
             repetition_penalty={}, presence_penalty={}, frequency_penalty={}, seed={}, \
             stop={:?}, stop_token_ids={:?}, logprobs={}, ignore_eos={}, min_tokens={})",
            self.n,
            self.max_tokens,
            self.temperature,
            self.top_p,
            self.top_k,
            self.min_p,
            self.repetition_penalty,
            self.presence_penalty,
            self.frequency_penalty,
            opt(self.seed),
            self.stop,
            self.stop_token_ids,
            opt(self.logprobs),
            if self.ignore_eos { "True" } else { "False" },
            self.min_tokens
        )
    }
}

/// Python's spelling of an optional number.
fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "None".to_string(), |x| x.to_string())
}

impl Default for SamplingParams {
    /// vLLM's defaults.
    fn default() -> Self {
        Self::new(
            1, 16, 1.0, 1.0, 0, 0.0, 1.0, 0.0, 0.0, None, None, None, None, false, 0,
        )
    }
}

/// `v` as a count of at least `min`, else a `ValueError` naming `name`.
pub fn count(name: &str, v: i64, min: i64) -> PyResult<usize> {
    if v < min {
        return Err(bad(name, format!("{v} is less than {min}")));
    }
    usize::try_from(v).map_err(|_| bad(name, format!("{v} is too large")))
}

/// A seed for a request that gave none: different on every call, as vLLM's.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl SamplingParams {
    /// The engine request for `prompt_ids`; the engine validates the rest when it is submitted.
    pub fn request(&self, prompt_ids: Vec<u32>) -> PyResult<Request> {
        let seed = match self.seed {
            Some(s) => u64::try_from(s).map_err(|_| bad("seed", format!("{s} is negative")))?,
            None => fresh_seed(),
        };
        let top_k = if self.top_k == -1 {
            0
        } else {
            count("top_k", self.top_k, 0)?
        };
        let sampling = Sampling {
            temperature: self.temperature as f32,
            top_k,
            top_p: self.top_p as f32,
            min_p: self.min_p as f32,
            repeat_penalty: self.repetition_penalty as f32,
            presence_penalty: self.presence_penalty as f32,
            frequency_penalty: self.frequency_penalty as f32,
            seed,
            top_logprobs: match self.logprobs {
                Some(k) => count("logprobs", k, 0)?,
                None => 0,
            },
            stats: self.logprobs.is_some(),
            ..Sampling::default()
        };
        let stop_ids = self
            .stop_token_ids
            .iter()
            .map(|&id| {
                u32::try_from(id)
                    .map_err(|_| bad("stop_token_ids", format!("{id} is not a token id")))
            })
            .collect::<PyResult<Vec<u32>>>()?;
        Ok(Request {
            stop_strings: self.stop.clone(),
            stop_ids,
            n: count("n", self.n, 1)?,
            ignore_eos: self.ignore_eos,
            min_tokens: count("min_tokens", self.min_tokens, 0)?,
            ..Request::new(
                prompt_ids,
                sampling,
                count("max_tokens", self.max_tokens, 1)?,
            )
        })
    }
}
