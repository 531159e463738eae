//! What `LLM` and `AsyncLLM` share: the loaded model's engine thread and tokenizer (`Core`),
//! prompts as Python gives them (text or token ids), and chat messages through the model's
//! template. The engine thread owns the model and the KV cache; `Core` only holds a handle
//! to it, so any number of Python threads submit through one `Core` at once.

use crate::errors::{bad, to_py};
use crate::outputs::Collector;
use crate::params::{count, SamplingParams};
use everett_engine::engine::handle::{spawn, EngineHandle};
use everett_engine::engine::{Engine, EngineConfig, Events, Task};
use everett_engine::gguf::{GgufFile, Value};
use everett_engine::kv::KvType;
use everett_engine::model::Model;
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::tokenizer::Tokenizer;
use everett_server::{ChatTemplate, Conversation};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Requests that may wait at once: an offline `generate` submits all its prompts together.
pub const MAX_WAITING: usize = 1 << 20;

/// A prompt: text (tokenized with the model's BOS, as the command line does), token ids, or
/// vLLM's prompt dicts (`{"prompt": text}` or `{"prompt_token_ids": ids}`).
#[derive(FromPyObject)]
pub enum Prompt {
    Text(String),
    Ids(Vec<i64>),
    Dict(std::collections::HashMap<String, Prompt>),
}

/// One prompt or a list of them.
#[derive(FromPyObject)]
pub enum Prompts {
    One(Prompt),
    Many(Vec<Prompt>),
}

impl Prompts {
    pub fn into_vec(self) -> Vec<Prompt> {
        match self {
            Prompts::One(p) => vec![p],
            Prompts::Many(v) => v,
        }
    }
}

/// How to load a model (the constructor's arguments, checked).
pub struct LoadOptions {
    pub model: Option<PathBuf>,
    pub threads: usize,
    pub kv_tokens: usize,
    pub max_running: usize,
    pub kv_type: KvType,
}

impl LoadOptions {
    pub fn new(
        model: Option<PathBuf>,
        threads: Option<i64>,
        kv_tokens: i64,
        max_running: i64,
        kv_type: &str,
    ) -> PyResult<Self> {
        let threads = match threads {
            Some(t) if !(1..=256).contains(&t) => {
                return Err(bad("threads", format!("{t} is not in 1..=256")))
            }
            Some(t) => t as usize,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
        };
        Ok(Self {
            model,
            threads,
            kv_tokens: count("kv_tokens", kv_tokens, 16)?,
            max_running: count("max_running", max_running, 1)?,
            kv_type: KvType::parse(kv_type).ok_or_else(|| {
                bad(
                    "kv_type",
                    format!("expected one of {:?}, got {kv_type:?}", KvType::NAMES),
                )
            })?,
        })
    }
}

/// A loaded model behind its engine thread.
pub struct Core {
    pub engine: EngineHandle,
    pub tok: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    /// The GGUF's chat template source, to build another `ChatTemplate` (the HTTP app's).
    pub template_src: Option<String>,
    pub context: usize,
    pub model_path: PathBuf,
    pub architecture: String,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Core {
    /// Loads the model (the default one, pulled with this interpreter's pip, when none is
    /// named) and starts its engine thread; the GIL is released meanwhile.
    pub fn load(py: Python<'_>, o: LoadOptions) -> PyResult<Self> {
        let python: String = py.import("sys")?.getattr("executable")?.extract()?;
        py.detach(|| Self::load_blocking(o, &python)).map_err(to_py)
    }

    fn load_blocking(o: LoadOptions, python: &str) -> everett_engine::Result<Self> {
        let path = everett_engine::pull::resolve(o.model.as_deref(), python)?;
        let file = GgufFile::open(&path)?;
        let text = |key: &str| match file.get(key) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let architecture = text("general.architecture").unwrap_or_default();
        let template_src = text("tokenizer.chat_template");
        let template =
            ChatTemplate::choose(template_src.clone(), &architecture).map_err(|problem| {
                everett_engine::Error::Metadata {
                    key: "tokenizer.chat_template".into(),
                    problem,
                }
            })?;
        let tok = Tokenizer::from_gguf(&file)?;
        let mut model = Model::from_gguf(&file, o.threads)?;
        model.set_kv_type(o.kv_type)?;
        file.release_pages();
        model.check_kv_memory(o.kv_tokens)?;
        let context = model.config.context_length;
        let cfg = EngineConfig {
            kv_tokens: o.kv_tokens,
            scheduler: SchedulerConfig {
                max_seqs: o.max_running,
                max_waiting: MAX_WAITING,
                ..SchedulerConfig::default()
            },
        };
        let tok = Arc::new(tok);
        let (engine, thread) = spawn(Engine::new(model, tok.clone(), cfg));
        Ok(Self {
            engine,
            tok,
            template,
            template_src,
            context,
            model_path: path,
            architecture,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Checks that every id names a token of the vocabulary.
    pub fn check_ids(&self, name: &str, ids: &[i64]) -> PyResult<Vec<u32>> {
        let vocab = self.tok.vocab_size();
        ids.iter()
            .map(|&id| match u32::try_from(id) {
                Ok(t) if (t as usize) < vocab => Ok(t),
                _ => Err(bad(
                    name,
                    format!("{id} is not a token id of this vocabulary (0..{vocab})"),
                )),
            })
            .collect()
    }

    /// The prompt's text (when given as text) and its token ids.
    pub fn prompt_ids(&self, p: Prompt) -> PyResult<(Option<String>, Vec<u32>)> {
        match p {
            Prompt::Text(t) => {
                let ids = self.tok.encode(&t, true, false);
                Ok((Some(t), ids))
            }
            Prompt::Ids(ids) => Ok((None, self.check_ids("prompt", &ids)?)),
            Prompt::Dict(mut d) => {
                let text = d.remove("prompt");
                let ids = d.remove("prompt_token_ids");
                if let Some(key) = d.keys().next() {
                    return Err(bad(
                        "prompt",
                        format!("a prompt dict has no key {key:?} here"),
                    ));
                }
                match (text, ids) {
                    (Some(t @ Prompt::Text(_)), None) | (None, Some(t @ Prompt::Ids(_))) => {
                        self.prompt_ids(t)
                    }
                    _ => Err(bad(
                        "prompt",
                        "a prompt dict has exactly one of \"prompt\" (a str) and \
                         \"prompt_token_ids\" (a list of ints)",
                    )),
                }
            }
        }
    }

    /// Submits a generation; its collector and event stream (dropping the stream cancels it).
    pub fn start(
        &self,
        prompt: Option<String>,
        ids: Vec<u32>,
        params: &SamplingParams,
    ) -> PyResult<(Collector, Events)> {
        let req = params.request(ids.clone())?;
        let n = req.n;
        let (id, events) = self.engine.submit(Task::Generate(req));
        let c = Collector::new(id.to_string(), prompt, ids, n, params.logprobs.is_some());
        Ok((c, events))
    }

    /// The rendered prompt text and token ids of each conversation in `messages` (one
    /// conversation, a list of dicts, or a list of them), offered `tools` when given.
    pub fn chat_prompts(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        tools: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(String, Vec<u32>)>> {
        let Some(template) = &self.template else {
            return Err(PyValueError::new_err(
                "this model has no chat template and no known chat format; use generate()",
            ));
        };
        let json = py.import("json")?;
        let to_value = |obj: &Bound<'_, PyAny>, name: &str| -> PyResult<serde_json::Value> {
            let text: String = json
                .call_method1("dumps", (obj,))
                .map_err(|e| bad(name, format!("not JSON-serialisable: {e}")))?
                .extract()?;
            serde_json::from_str(&text).map_err(|e| bad(name, e))
        };
        let tools = tools.map(|t| to_value(t, "tools")).transpose()?;
        let convs = match to_value(messages, "messages")? {
            serde_json::Value::Array(v) if v.iter().all(|m| m.is_array()) && !v.is_empty() => v,
            serde_json::Value::Array(v) => vec![serde_json::Value::Array(v)],
            _ => return Err(bad("messages", "expected a list of message dicts")),
        };
        convs
            .into_iter()
            .map(|c| {
                let serde_json::Value::Array(msgs) = c else {
                    return Err(bad("messages", "expected a list of message dicts"));
                };
                if let Some(m) = msgs.iter().find(|m| !m.is_object()) {
                    return Err(bad("messages", format!("{m} is not a message dict")));
                }
                let conv = Conversation {
                    messages: msgs,
                    tools: tools.clone(),
                };
                let (text, _) = template
                    .prompt_text(&self.tok, &conv)
                    .map_err(|e| bad("messages", e))?;
                let (ids, _) = template
                    .prompt(&self.tok, &conv)
                    .map_err(|e| bad("messages", e))?;
                Ok((text, ids))
            })
            .collect()
    }

    /// The engine's counters as a dict: steps (forward passes), forward_tokens, preemptions,
    /// admitted, cancelled, running, waiting, used/peak/capacity KV blocks, prefix-cache hits.
    pub fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let s = py.detach(|| self.engine.stats()).map_err(to_py)?;
        let d = pyo3::types::PyDict::new(py);
        d.set_item("steps", s.scheduler.steps)?;
        d.set_item("forward_tokens", s.forward_tokens)?;
        d.set_item("preemptions", s.scheduler.preemptions)?;
        d.set_item("admitted", s.scheduler.admitted)?;
        d.set_item("cancelled", s.cancelled)?;
        d.set_item("running", s.running)?;
        d.set_item("waiting", s.waiting)?;
        d.set_item("used_blocks", s.used_blocks)?;
        d.set_item("peak_used_blocks", s.peak_used_blocks)?;
        d.set_item("capacity_blocks", s.capacity_blocks)?;
        d.set_item("prefix_hit_tokens", s.prefix.hit_tokens)?;
        d.set_item("prefix_queried_tokens", s.prefix.queried_tokens)?;
        Ok(d)
    }

    /// Stops the engine thread: requests in flight end with an error.
    pub fn close(&self) {
        self.engine.shutdown(Duration::ZERO);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.close();
    }
}
