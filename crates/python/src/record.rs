//! The result of `explore` and `collapse`: the same object as the command line's `--json`
//! (built from the engine's own JSON, so the two cannot drift), read like a dict, plus
//! `to_html()`, the command line's offline page for it.

use everett_engine::oneshot::Collapsed;
use everett_engine::superposition::Exploration;
use everett_engine::tokenizer::Tokenizer;
use everett_server::pages;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList};
use std::sync::Arc;

enum Source {
    Exploration(Box<Exploration>),
    Collapse(Box<Collapsed>, Arc<Tokenizer>, String),
}

/// A read-only mapping over an exploration's or a collapse run's JSON object.
#[pyclass(module = "everett", frozen, mapping)]
pub struct Record {
    data: Py<PyDict>,
    json: String,
    source: Source,
}

fn parse(py: Python<'_>, json: &str) -> PyResult<Py<PyDict>> {
    let d = py.import("json")?.call_method1("loads", (json,))?;
    Ok(d.cast_into::<PyDict>()?.unbind())
}

impl Record {
    pub fn exploration(py: Python<'_>, e: Exploration) -> PyResult<Self> {
        let json = serde_json::to_string(&e)
            .map_err(|err| crate::errors::EverettError::new_err(err.to_string()))?;
        Ok(Self {
            data: parse(py, &json)?,
            json,
            source: Source::Exploration(Box::new(e)),
        })
    }

    pub fn collapse(
        py: Python<'_>,
        run: Collapsed,
        tok: Arc<Tokenizer>,
        prompt: String,
    ) -> PyResult<Self> {
        let json = run.to_json(&tok).to_string();
        Ok(Self {
            data: parse(py, &json)?,
            json,
            source: Source::Collapse(Box::new(run), tok, prompt),
        })
    }
}

#[pymethods]
impl Record {
    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        self.data
            .bind(py)
            .get_item(key)?
            .ok_or_else(|| PyKeyError::new_err(key.to_string()))
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.data.bind(py).len()
    }

    fn __contains__(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        self.data.bind(py).contains(key)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.data.bind(py).as_any().try_iter()
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        match other.cast::<Record>() {
            Ok(r) => self.data.bind(py).eq(r.get().data.bind(py)),
            Err(_) => self.data.bind(py).eq(other),
        }
    }

    fn keys<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.data.bind(py).keys()
    }

    fn values<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.data.bind(py).values()
    }

    fn items<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        self.data.bind(py).items()
    }

    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.data.bind(py).get_item(key)?.or(default))
    }

    /// A fresh dict of the whole object.
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        parse(py, &self.json)
    }

    /// The object as JSON text.
    fn to_json(&self) -> String {
        self.json.clone()
    }

    /// The self-contained HTML page the command line's `--html` writes.
    fn to_html(&self) -> String {
        match &self.source {
            Source::Exploration(e) => pages::explore::page(e),
            Source::Collapse(run, tok, prompt) => pages::collapse::page(run, tok, prompt),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let kind = match self.source {
            Source::Exploration(_) => "exploration",
            Source::Collapse(..) => "collapse",
        };
        let keys: Vec<String> = self
            .data
            .bind(py)
            .keys()
            .iter()
            .map(|k| k.to_string())
            .collect();
        format!("Record({kind}: {})", keys.join(", "))
    }
}
