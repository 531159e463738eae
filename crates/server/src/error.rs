//! The OpenAI error object, `{"error": {"message", "type", "param", "code"}}`, and how engine
//! errors map onto HTTP statuses: the client's mistakes are 4xx and name the field; the engine's
//! own failures are 5xx and say nothing of its internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use everett_engine::error::excerpt;
use everett_engine::Error;
use serde_json::json;

/// Longest error message a client gets back, in characters.
const MESSAGE_CHARS: usize = 400;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    /// What the log says instead of `message` (an internal failure's real cause).
    pub cause: Option<String>,
}

/// The text a refused or failed response leaves for the request log (`log_refusals`).
#[derive(Clone, Debug)]
pub struct LogNote(pub String);

impl ApiError {
    /// A 400 that names the offending field. The message and the name are cut to a short,
    /// printable excerpt: they may quote what the client sent.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: excerpt(&message.into(), MESSAGE_CHARS),
            kind: "invalid_request_error",
            param: Some(excerpt(&param.into(), 64)),
            cause: None,
        }
    }

    pub fn not_found(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found_error",
            ..Self::invalid(param, message)
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let param = match &e {
            Error::Param { name, .. } => Some(name.to_string()),
            Error::TooLarge(_) | Error::InvalidRequest(_) => Some("prompt".to_string()),
            _ => None,
        };
        let (status, kind, message) = match &e {
            _ if e.is_client_error() => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                excerpt(&e.to_string(), MESSAGE_CHARS),
            ),
            Error::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            Error::QueueFull(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                e.to_string(),
            ),
            // The cause goes to the log; the client learns only that it may retry.
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the engine failed to run this request; retrying it may succeed".to_string(),
            ),
        };
        let cause = (status == StatusCode::INTERNAL_SERVER_ERROR).then(|| e.to_string());
        Self {
            status,
            message,
            kind,
            param,
            cause,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let note = LogNote(self.cause.unwrap_or_else(|| self.message.clone()));
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": null,
        }});
        let mut r = (self.status, axum::Json(body)).into_response();
        r.extensions_mut().insert(note);
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // A waiting request is usually admitted within seconds.
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_429_with_retry_after() {
        let r = ApiError::from(Error::QueueFull(7)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ApiError::from(Error::Internal("secret detail".into()));
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!r.message.contains("secret"), "internals do not leak");
    }
}
