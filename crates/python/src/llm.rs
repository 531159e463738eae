//! `everett.LLM`: the engine in-process, with vLLM's offline API. Every method submits to the
//! one engine thread and waits with the GIL released (`wait`), so calls from several Python
//! threads share forward passes; Ctrl-C while waiting cancels the call's requests and raises
//! `KeyboardInterrupt`, and the `LLM` stays usable.

use crate::core::{Core, LoadOptions, Prompt, Prompts, MAX_WAITING};
use crate::errors::{bad, to_py, EverettError};
use crate::http::HttpApp;
use crate::job::Job;
use crate::outputs::{Collector, RequestOutput};
use crate::params::{count, SamplingParams, Strings};
use crate::record::Record;
use crate::stream::Stream;
use crate::wait::Waiter;
use everett_engine::collapse::{CollapseParams, Mode};
use everett_engine::engine::{Event, Events, ExploreRequest, Task};
use everett_engine::oneshot::Collapsed;
use everett_engine::overflow::Overflow;
use everett_engine::perplexity::{chunk_tasks, ChunkSum};
use everett_engine::request::Output;
use everett_engine::sample::SamplingParams as Sampling;
use everett_engine::superposition::{ExploreParams, Measure};
use everett_server::{router, ChatTemplate, Limits, ServerConfig};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Sampling parameters for every prompt, or one per prompt.
#[derive(FromPyObject)]
pub enum ParamsArg {
    One(SamplingParams),
    Many(Vec<SamplingParams>),
}

/// Each prompt's parameters (the defaults when none are given).
pub fn params_for(params: Option<ParamsArg>, prompts: usize) -> PyResult<Vec<SamplingParams>> {
    match params {
        None => Ok(vec![SamplingParams::default(); prompts]),
        Some(ParamsArg::One(p)) => Ok(vec![p; prompts]),
        Some(ParamsArg::Many(v)) if v.len() == prompts => Ok(v),
        Some(ParamsArg::Many(v)) => Err(bad(
            "params",
            format!("{} sampling params for {prompts} prompts", v.len()),
        )),
    }
}

/// `params`, or vLLM's name for it; not both.
fn either(params: Option<ParamsArg>, vllm: Option<ParamsArg>) -> PyResult<Option<ParamsArg>> {
    match (params, vllm) {
        (Some(_), Some(_)) => Err(bad(
            "sampling_params",
            "give params or sampling_params, not both",
        )),
        (p, v) => Ok(p.or(v)),
    }
}

/// Runs one request's stream to its end, folding its events into `c`.
pub fn collect(
    py: Python<'_>,
    waiter: &Waiter,
    core: &Core,
    c: &mut Collector,
    events: &mut Events,
) -> PyResult<()> {
    while let Some(e) = waiter.next(py, events)? {
        if let Event::Error(e) = e {
            return Err(to_py(e));
        }
        c.absorb(&core.tok, &e);
    }
    if !c.finished() {
        return Err(EverettError::new_err(format!(
            "request {} ended unfinished",
            c.request_id
        )));
    }
    Ok(())
}

/// A model loaded in this process (vLLM's `LLM`).
#[pyclass(module = "everett", name = "LLM", frozen)]
pub struct Llm {
    pub core: Arc<Core>,
}

#[pymethods]
impl Llm {
    #[new]
    #[pyo3(signature = (model=None, *, threads=None, kv_tokens=16384, max_running=64, kv_type="f16"))]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        threads: Option<i64>,
        kv_tokens: i64,
        max_running: i64,
        kv_type: &str,
    ) -> PyResult<Self> {
        let o = LoadOptions::new(model, threads, kv_tokens, max_running, kv_type)?;
        Core::load(py, o).map(|core| Self {
            core: Arc::new(core),
        })
    }

    /// Completions of `prompts` (a str, a list of str, or token-id lists), in input order.
    /// `sampling_params` is vLLM's name for `params`.
    #[pyo3(signature = (prompts, params=None, *, sampling_params=None))]
    fn generate(
        &self,
        py: Python<'_>,
        prompts: Prompts,
        params: Option<ParamsArg>,
        sampling_params: Option<ParamsArg>,
    ) -> PyResult<Vec<RequestOutput>> {
        let prompts = prompts.into_vec();
        let params = params_for(either(params, sampling_params)?, prompts.len())?;
        let mut runs = Vec::with_capacity(prompts.len());
        for (p, sp) in prompts.into_iter().zip(&params) {
            let (text, ids) = self.core.prompt_ids(p)?;
            runs.push(self.core.start(text, ids, sp)?);
        }
        self.finish(py, runs)
    }

    /// A completion of `prompt` as it is produced: an iterator of `RequestOutput` deltas, each
    /// holding one new token of one sample (or, last for each sample, its finish reason).
    #[pyo3(signature = (prompt, params=None))]
    fn stream(&self, prompt: Prompt, params: Option<SamplingParams>) -> PyResult<Stream> {
        let (text, ids) = self.core.prompt_ids(prompt)?;
        let (c, events) = self.core.start(text, ids, &params.unwrap_or_default())?;
        Stream::new(self.core.clone(), c, events)
    }

    /// Submits one prompt now and returns its `Job` (wait for it later, from any thread).
    #[pyo3(signature = (prompt, params=None))]
    fn submit(&self, prompt: Prompt, params: Option<SamplingParams>) -> PyResult<Job> {
        let (text, ids) = self.core.prompt_ids(prompt)?;
        let (c, events) = self.core.start(text, ids, &params.unwrap_or_default())?;
        Ok(Job::new(self.core.clone(), c, events))
    }

    /// Submits one conversation through the chat template now and returns its `Job`.
    #[pyo3(signature = (messages, params=None, *, tools=None))]
    fn submit_chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        params: Option<SamplingParams>,
        tools: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Job> {
        let mut prompts = self.core.chat_prompts(py, messages, tools)?;
        if prompts.len() != 1 {
            return Err(bad("messages", "submit_chat takes one conversation"));
        }
        let (text, ids) = prompts.remove(0);
        let (c, events) = self
            .core
            .start(Some(text), ids, &params.unwrap_or_default())?;
        Ok(Job::new(self.core.clone(), c, events))
    }

    /// Answers to `messages` (a conversation: a list of `{"role", "content"}` dicts; or a list
    /// of conversations) through the model's chat template; `tools` are offered to it.
    #[pyo3(signature = (messages, params=None, *, sampling_params=None, tools=None))]
    fn chat(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        params: Option<ParamsArg>,
        sampling_params: Option<ParamsArg>,
        tools: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<RequestOutput>> {
        let prompts = self.core.chat_prompts(py, messages, tools)?;
        let params = params_for(either(params, sampling_params)?, prompts.len())?;
        let mut runs = Vec::with_capacity(prompts.len());
        for ((text, ids), sp) in prompts.into_iter().zip(&params) {
            runs.push(self.core.start(Some(text), ids, sp)?);
        }
        self.finish(py, runs)
    }

    /// Many futures of `prompt` as a tree (`everett explore --json`'s object; `.to_html()`).
    #[pyo3(signature = (prompt, *, branches=3, width=10, steps=6, temperature=1.0, min_p=0.0,
        measure="max", seed=0, stochastic=false, alpha=0.0, bifurcation_gap=0.1, stop=None,
        no_share=false))]
    #[allow(clippy::too_many_arguments)]
    fn explore(
        &self,
        py: Python<'_>,
        prompt: String,
        branches: i64,
        width: i64,
        steps: i64,
        temperature: f64,
        min_p: f64,
        measure: &str,
        seed: i64,
        stochastic: bool,
        alpha: f64,
        bifurcation_gap: f64,
        stop: Option<Strings>,
        no_share: bool,
    ) -> PyResult<Record> {
        let params = ExploreParams {
            branches: count("branches", branches, 1)?,
            width: count("width", width, 1)?,
            steps: count("steps", steps, 1)?,
            temperature: temperature as f32,
            min_p: min_p as f32,
            stochastic,
            seed: count("seed", seed, 0)? as u64,
            measure: Measure::parse(measure).ok_or_else(|| {
                bad(
                    "measure",
                    format!("expected \"max\", \"sample\" or \"all\", got {measure:?}"),
                )
            })?,
            alpha: alpha as f32,
            bifurcation_gap: bifurcation_gap as f32,
            stop: stop.map(Strings::into_vec).unwrap_or_default(),
            no_share,
        };
        params.validate().map_err(to_py)?;
        let req = ExploreRequest {
            prompt_ids: self.core.tok.encode(&prompt, true, false),
            prompt,
            params,
            constraint: None,
        };
        let (_, mut events) = self.core.engine.submit(Task::Explore(req));
        let waiter = Waiter::new()?;
        while let Some(e) = waiter.next(py, &mut events)? {
            match e {
                Event::Explored(x) => return Record::exploration(py, *x),
                Event::Error(e) => return Err(to_py(e)),
                _ => {}
            }
        }
        Err(EverettError::new_err(
            "the exploration ended without a result",
        ))
    }

    /// Greedy generation committing several tokens per forward pass (`everett collapse
    /// --json`'s object; `.to_html()`): the same tokens and logprobs as greedy `generate`.
    #[pyo3(signature = (prompt, *, max_tokens=128, mode="lookahead", window=8, ngram=4,
        candidates=1, stop=None))]
    #[allow(clippy::too_many_arguments)]
    fn collapse(
        &self,
        py: Python<'_>,
        prompt: String,
        max_tokens: i64,
        mode: &str,
        window: i64,
        ngram: i64,
        candidates: i64,
        stop: Option<Strings>,
    ) -> PyResult<Record> {
        let params = CollapseParams {
            mode: match mode {
                "lookahead" => Mode::Lookahead,
                "jacobi" => Mode::Jacobi,
                _ => {
                    return Err(bad(
                        "mode",
                        format!("expected \"lookahead\" or \"jacobi\", got {mode:?}"),
                    ))
                }
            },
            window: count("window", window, 0)?,
            ngram: count("ngram", ngram, 0)?,
            candidates: count("candidates", candidates, 0)?,
            fast_forward: true,
        };
        let ids = self.core.tok.encode(&prompt, true, false);
        let mut req = everett_engine::generate::Request::new(
            ids.clone(),
            Sampling::default(),
            count("max_tokens", max_tokens, 1)?,
        );
        req.stop_strings = stop.map(Strings::into_vec).unwrap_or_default();
        req.collapse = Some(params);
        let start = Instant::now();
        let (_, mut events) = self.core.engine.submit(Task::Generate(req));
        let (mut output, mut passes) = (Output::new(ids), Vec::new());
        let waiter = Waiter::new()?;
        while let Some(e) = waiter.next(py, &mut events)? {
            match e {
                Event::CollapsePass(p) => passes.push(*p),
                Event::Error(e) => return Err(to_py(e)),
                e => {
                    output.absorb(&e, 0);
                }
            }
        }
        if output.finish_reason.is_none() {
            return Err(EverettError::new_err(
                "the collapse request ended unfinished",
            ));
        }
        let run = Collapsed {
            params,
            output,
            passes,
            wall_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        Record::collapse(py, run, self.core.tok.clone(), prompt)
    }

    /// llama.cpp's perplexity of `text` (`everett perplexity --json`'s object): chunks of
    /// `ctx` tokens, BOS first, the second half of each scored.
    #[pyo3(signature = (text, ctx=512))]
    fn perplexity<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        ctx: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ctx = count("ctx", ctx, 16)?;
        if ctx > self.core.context {
            return Err(bad(
                "ctx",
                format!("{ctx} is above the model's context ({})", self.core.context),
            ));
        }
        let tokens = self.core.tok.encode(text, true, false);
        let tasks = chunk_tasks(&self.core.tok, &tokens, ctx);
        if tasks.is_empty() {
            return Err(bad(
                "text",
                format!("{} tokens, fewer than one chunk of ctx {ctx}", tokens.len()),
            ));
        }
        let mut sum = ChunkSum::new(tasks.len());
        let mut streams: Vec<Events> = tasks
            .into_iter()
            .map(|t| self.core.engine.submit(t).1)
            .collect();
        let waiter = Waiter::new()?;
        for (c, events) in streams.iter_mut().enumerate() {
            while let Some(e) = waiter.next(py, events)? {
                match e {
                    Event::Scored(v) => {
                        sum.add(c, v);
                    }
                    Event::Error(e) => return Err(to_py(e)),
                    _ => {}
                }
            }
        }
        if !sum.complete() {
            return Err(EverettError::new_err(format!(
                "chunk {} ended without a score",
                sum.summed
            )));
        }
        let d = PyDict::new(py);
        d.set_item("perplexity", sum.perplexity())?;
        d.set_item("tokens_scored", sum.scored)?;
        Ok(d)
    }

    /// Token ids of `text` (with the model's BOS when `add_special_tokens`).
    #[pyo3(signature = (text, add_special_tokens=true))]
    fn tokenize(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        self.core.tok.encode(text, add_special_tokens, false)
    }

    /// The text of token ids.
    fn detokenize(&self, ids: Vec<i64>) -> PyResult<String> {
        Ok(self.core.tok.decode(&self.core.check_ids("ids", &ids)?))
    }

    /// The OpenAI-compatible HTTP API of `everett serve` over this engine, answered in-process
    /// (`HttpApp.handle`); `model_name` defaults to the GGUF file's stem.
    #[pyo3(signature = (*, model_name=None, api_key=None, max_seqs_per_request=256, lenient_fields=false))]
    fn http_app(
        &self,
        model_name: Option<String>,
        api_key: Option<String>,
        max_seqs_per_request: i64,
        lenient_fields: bool,
    ) -> PyResult<HttpApp> {
        let core = &self.core;
        let chat_template = ChatTemplate::choose(core.template_src.clone(), &core.architecture)
            .map_err(|e| EverettError::new_err(format!("the chat template: {e}")))?;
        let model_name = model_name.unwrap_or_else(|| {
            core.model_path
                .file_stem()
                .map_or_else(|| "everett".into(), |s| s.to_string_lossy().into_owned())
        });
        let cfg = ServerConfig {
            model_name,
            tokenizer: core.tok.clone(),
            context: core.context,
            api_key,
            chat_template,
            limits: Limits {
                max_seqs_per_request: count("max_seqs_per_request", max_seqs_per_request, 1)?,
                max_waiting: MAX_WAITING,
                lenient_fields,
                ..Limits::default()
            },
            overflow: Overflow::Stop,
        };
        Ok(HttpApp {
            router: router(core.engine.clone(), cfg),
        })
    }

    /// The model's context length in tokens.
    #[getter]
    fn context_length(&self) -> usize {
        self.core.context
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.core.tok.vocab_size()
    }

    #[getter]
    fn model_path(&self) -> PathBuf {
        self.core.model_path.clone()
    }

    #[getter]
    fn architecture(&self) -> String {
        self.core.architecture.clone()
    }

    /// The engine's counters (a dict; see the README).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        self.core.stats(py)
    }

    /// Stops the engine (also done when the `LLM` is garbage-collected).
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.core.close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        format!(
            "LLM(model={:?}, architecture={:?})",
            self.core.model_path.display().to_string(),
            self.core.architecture
        )
    }
}

impl Llm {
    /// Waits for every run in submission order; the first error cancels the rest.
    fn finish(
        &self,
        py: Python<'_>,
        mut runs: Vec<(Collector, Events)>,
    ) -> PyResult<Vec<RequestOutput>> {
        let waiter = Waiter::new()?;
        for (c, events) in &mut runs {
            collect(py, &waiter, &self.core, c, events)?;
        }
        Ok(runs.into_iter().map(|(c, _)| c.output()).collect())
    }
}
