//! `LLM.http_app()`: the OpenAI-compatible HTTP API of `everett serve` (the server crate's
//! router: the same routes, validation, error objects and SSE) answered in-process, one request
//! at a time, for a Python web front end (the Ray Serve deployment of `everett.ray`) to carry.
//! Nothing here parses a request: it builds an HTTP request from what Python hands over, runs
//! the router on it, and hands back the status, the headers and the body as it is produced.
//! Calls block their (Python) thread with the GIL released; async callers run them on a thread
//! pool, so no thread of ours ever calls into Python.

use crate::errors::{bad, EverettError};
use crate::wait::Waiter;
use axum::body::{Body, BodyDataStream};
use axum::Router;
use futures_util::StreamExt;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// (name, value) pairs.
type Headers = Vec<(String, String)>;

/// The server's router over an `LLM`'s engine.
#[pyclass(module = "everett", frozen)]
pub struct HttpApp {
    pub router: Router,
}

#[pymethods]
impl HttpApp {
    /// `(status, headers, body)`: the router's answer to one request; `headers` a list of
    /// (name, value) pairs, `body` the `HttpBody` to read the chunks from (an SSE stream
    /// yields each event as the engine produces it).
    fn handle(
        &self,
        py: Python<'_>,
        method: &str,
        path: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> PyResult<(u16, Headers, HttpBody)> {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (name, value) in &headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Body::from(body))
            .map_err(|e| bad("request", format!("not an HTTP request: {e}")))?;
        // The body's stream may hold timers of the runtime the response was made on: one
        // waiter serves both.
        let waiter = Waiter::new()?;
        let resp = waiter
            .run(py, self.router.clone().oneshot(req))?
            .map_err(|e| EverettError::new_err(format!("the router failed: {e}")))?;
        let (parts, body) = resp.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let cancel = waiter.cancel.clone();
        let body = HttpBody {
            state: Mutex::new(Some((body.into_data_stream(), waiter))),
            cancel,
        };
        Ok((parts.status.as_u16(), headers, body))
    }
}

/// A response body, chunk by chunk. `close()` (from any thread) or dropping it (a client that
/// went away) drops the stream, which cancels the engine request behind it.
#[pyclass(module = "everett", frozen)]
pub struct HttpBody {
    state: Mutex<Option<(BodyDataStream, Waiter)>>,
    cancel: Arc<AtomicBool>,
}

#[pymethods]
impl HttpBody {
    /// The next chunk, `None` at the end.
    fn next_chunk<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some((stream, waiter)) = guard.as_mut() else {
            return Ok(None);
        };
        let next = waiter.run(py, stream.next());
        match next {
            Ok(Some(Ok(chunk))) => Ok(Some(PyBytes::new(py, &chunk))),
            Ok(None) => {
                *guard = None;
                Ok(None)
            }
            Ok(Some(Err(e))) => {
                *guard = None;
                Err(EverettError::new_err(format!(
                    "the response body failed: {e}"
                )))
            }
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }

    /// Cancels the response (and the engine request behind it).
    fn close(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Ok(mut g) = self.state.try_lock() {
            g.take();
        }
    }
}
