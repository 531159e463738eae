//! Reasoning models: the text a model writes inside its template's thinking tags goes to
//! `message.reasoning_content` (and `delta.reasoning_content` when streaming), not `content`, as
//! vLLM and llama-server return it. The tags come from the chat template (`<think>` and
//! `</think>`, the DeepSeek-R1 / Qwen 3 / QwQ form); a prompt that already ends with the opening
//! tag (a template that opens the thought for the model) starts the reply inside it. Only a
//! thought at the start of the reply counts: once content has begun, tags are text.

/// A template's thinking tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tags {
    pub open: &'static str,
    pub close: &'static str,
}

const THINK: Tags = Tags {
    open: "<think>",
    close: "</think>",
};

impl Tags {
    /// The tags a chat template's source writes, if it has any.
    pub fn of_template(src: &str) -> Option<Tags> {
        (src.contains(THINK.open) && src.contains(THINK.close)).then_some(THINK)
    }
}

/// How one reply's choices are split.
#[derive(Debug, Clone, Copy)]
pub struct Reasoning {
    pub tags: Tags,
    /// The rendered prompt ends inside an opened thought.
    pub starts_inside: bool,
}

impl Reasoning {
    /// For a prompt rendered as `prompt` by a template with `tags`.
    pub fn for_prompt(tags: Tags, prompt: &str) -> Self {
        Self {
            tags,
            starts_inside: prompt.trim_end().ends_with(tags.open),
        }
    }

    /// A whole reply as (reasoning, content); `None` when the reply had no thought.
    pub fn split(&self, text: &str) -> (Option<String>, String) {
        let mut s = Splitter::new(*self);
        let (mut r, mut c) = s.push(text);
        let (r2, c2) = s.finish();
        r.push_str(&r2);
        c.push_str(&c2);
        (s.thought.then_some(r), c)
    }
}

/// Splits a reply's text as it streams, holding back what could be the start of a tag.
#[derive(Debug)]
pub struct Splitter {
    tags: Tags,
    inside: bool,
    /// Content has begun (or a thought ended): tags are text from here on.
    settled: bool,
    /// A thought was seen.
    pub thought: bool,
    held: String,
}

impl Splitter {
    pub fn new(r: Reasoning) -> Self {
        Self {
            tags: r.tags,
            inside: r.starts_inside,
            settled: false,
            thought: r.starts_inside,
            held: String::new(),
        }
    }

    /// The next piece of text as (reasoning, content).
    pub fn push(&mut self, text: &str) -> (String, String) {
        let mut buf = std::mem::take(&mut self.held) + text;
        let (mut reasoning, mut content) = (String::new(), String::new());
        loop {
            if self.inside {
                if let Some(at) = buf.find(self.tags.close) {
                    reasoning.push_str(&buf[..at]);
                    buf.drain(..at + self.tags.close.len());
                    self.inside = false;
                    self.settled = true;
                    continue;
                }
                let hold = partial_suffix(&buf, self.tags.close);
                self.held = buf.split_off(buf.len() - hold);
                reasoning.push_str(&buf);
                break;
            }
            if !self.settled {
                let lead = buf.len() - buf.trim_start().len();
                let rest = &buf[lead..];
                if rest.starts_with(self.tags.open) {
                    buf.drain(..lead + self.tags.open.len());
                    self.inside = true;
                    self.thought = true;
                    continue;
                }
                if self.tags.open.starts_with(rest) {
                    // Only whitespace, or the start of the opening tag, so far: wait.
                    self.held = buf;
                    break;
                }
                self.settled = true;
            }
            content.push_str(&buf);
            break;
        }
        (reasoning, content)
    }

    /// What is still held, at the end of the reply.
    pub fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        if self.inside {
            (held, String::new())
        } else {
            (String::new(), held)
        }
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
pub(crate) fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| {
            s.len() >= n && s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(r: Reasoning, pieces: &[&str]) -> (String, String) {
        let mut s = Splitter::new(r);
        let (mut rs, mut cs) = (String::new(), String::new());
        for p in pieces {
            let (a, b) = s.push(p);
            rs.push_str(&a);
            cs.push_str(&b);
        }
        let (a, b) = s.finish();
        (rs + &a, cs + &b)
    }

    #[test]
    fn a_thought_at_the_start_goes_to_reasoning_even_split_over_pieces() {
        let r = Reasoning::for_prompt(THINK, "<|im_start|>assistant\n");
        assert!(!r.starts_inside);
        let (rs, cs) = stream(r, &["<th", "ink>Let me", " see.</th", "ink>\n\nIt is 4."]);
        assert_eq!((rs.as_str(), cs.as_str()), ("Let me see.", "\n\nIt is 4."));
        assert_eq!(r.split("<think>a</think>b"), (Some("a".into()), "b".into()));
    }

    #[test]
    fn a_prompt_that_opens_the_thought_starts_inside_it() {
        let r = Reasoning::for_prompt(THINK, "<|Assistant|><think>\n");
        assert!(r.starts_inside);
        let (rs, cs) = stream(r, &["hmm, 2+2", "</think>", "4"]);
        assert_eq!((rs.as_str(), cs.as_str()), ("hmm, 2+2", "4"));
        // Cut off while thinking: everything is reasoning.
        assert_eq!(
            r.split("still thinking <"),
            (Some("still thinking <".into()), String::new())
        );
    }

    #[test]
    fn without_a_leading_thought_tags_are_text() {
        let r = Reasoning::for_prompt(THINK, "user: hi\nassistant:");
        assert_eq!(
            r.split("Hello <think>x</think>"),
            (None, "Hello <think>x</think>".into())
        );
        assert_eq!(r.split("<thi"), (None, "<thi".into()));
        assert_eq!(stream(r, &["  ", "ok"]), (String::new(), "  ok".into()));
        assert_eq!(Tags::of_template("{{ messages }}"), None);
        assert_eq!(
            Tags::of_template("{% if x %}<think>\n{% endif %}</think>"),
            Some(THINK)
        );
    }
}
