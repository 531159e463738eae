//! Tool calls in a streamed reply: text goes out as content until it could be the start of a
//! call; from there it is held, and parsed when the reply ends (the calls go out then, whole,
//! as `delta.tool_calls`). Held text that turns out not to be a call goes out as content.

use super::parse::{parse, Parsed, HERMES_OPEN, MISTRAL_OPEN, PYTHON_TAG};
use super::Format;

/// One choice's stream.
#[derive(Debug)]
pub struct CallStream {
    format: Format,
    held: String,
    state: State,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Sending content, watching for the format's opening marker.
    Watching,
    /// Holding everything from a possible call's start to the end of the reply.
    Holding,
    /// The reply is plain content (a format whose calls can only open the reply).
    Content,
}

impl CallStream {
    pub fn new(format: Format) -> Self {
        let state = match format {
            // The whole reply is one JSON object.
            Format::Generic => State::Holding,
            _ => State::Watching,
        };
        Self {
            format,
            held: String::new(),
            state,
        }
    }

    /// The next piece of the reply; returns the content that can go out now.
    pub fn push(&mut self, text: &str) -> String {
        match self.state {
            State::Content => return text.to_string(),
            State::Holding => {
                self.held.push_str(text);
                return String::new();
            }
            State::Watching => {}
        }
        let mut buf = std::mem::take(&mut self.held) + text;
        match self.format {
            Format::Llama3Json => {
                // A call is the whole reply: it opens with `{` or the python tag.
                let rest = buf.trim_start();
                if rest.is_empty()
                    || (rest.len() < PYTHON_TAG.len() && PYTHON_TAG.starts_with(rest))
                {
                    self.held = buf;
                    return String::new();
                }
                if rest.starts_with('{') || rest.starts_with(PYTHON_TAG) {
                    self.state = State::Holding;
                    self.held = buf;
                    return String::new();
                }
                self.state = State::Content;
                buf
            }
            _ => {
                let marker = match self.format {
                    Format::Hermes => HERMES_OPEN,
                    _ => MISTRAL_OPEN,
                };
                if let Some(at) = buf.find(marker) {
                    self.held = buf.split_off(at);
                    self.state = State::Holding;
                    return buf;
                }
                let hold = crate::reasoning::partial_suffix(&buf, marker);
                self.held = buf.split_off(buf.len() - hold);
                buf
            }
        }
    }

    /// The end of the reply: what was held, parsed.
    pub fn finish(&mut self) -> Parsed {
        let held = std::mem::take(&mut self.held);
        if self.state == State::Holding {
            parse(self.format, &held)
        } else {
            Parsed {
                content: held,
                calls: Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: Format, pieces: &[&str]) -> (String, Parsed) {
        let mut s = CallStream::new(format);
        let sent: String = pieces.iter().map(|p| s.push(p)).collect();
        (sent, s.finish())
    }

    #[test]
    fn content_streams_until_a_call_opens() {
        let (sent, end) = run(
            Format::Hermes,
            &[
                "Checking",
                " now.\n<tool",
                "_call>\n{\"name\": \"f\", ",
                "\"arguments\": {}}\n</tool_call>",
            ],
        );
        assert_eq!(sent, "Checking now.\n");
        assert_eq!(end.calls.len(), 1);
        assert_eq!(end.content, "");
        // A marker that never completes goes out at the end.
        let (sent, end) = run(Format::Hermes, &["a <tool", "s"]);
        assert_eq!((sent.as_str(), end.content.as_str()), ("a <tools", ""));
        let (sent, end) = run(Format::Hermes, &["a <tool"]);
        assert_eq!((sent.as_str(), end.content.as_str()), ("a ", "<tool"));
    }

    #[test]
    fn llama3_holds_only_a_reply_that_opens_like_a_call() {
        let (sent, end) = run(
            Format::Llama3Json,
            &[" ", "{\"name\": \"f\",", " \"parameters\": {}}"],
        );
        assert_eq!(sent, "");
        assert_eq!(end.calls.len(), 1);
        let (sent, end) = run(Format::Llama3Json, &["Hi", " {there}"]);
        assert_eq!((sent.as_str(), end.calls.len()), ("Hi {there}", 0));
        // Held like a call, but not one: content at the end.
        let (sent, end) = run(Format::Llama3Json, &["{not json"]);
        assert_eq!((sent.as_str(), end.content.as_str()), ("", "{not json"));
    }

    #[test]
    fn mistral_and_generic() {
        let (sent, end) = run(
            Format::Mistral { args: true },
            &["Sure.", "[TOOL_CALLS]", "f[ARGS]", "{\"x\": 1}"],
        );
        assert_eq!((sent.as_str(), end.calls.len()), ("Sure.", 1));
        let (sent, end) = run(Format::Generic, &["{\"response\": ", "\"hello\"}"]);
        assert_eq!((sent.as_str(), end.content.as_str()), ("", "hello"));
    }
}
