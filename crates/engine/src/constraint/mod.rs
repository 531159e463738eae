//! Constrained decoding: a request's output must match a JSON schema, a regular expression, one
//! of a list of strings, or a grammar (llguidance's Lark dialect). `llguidance` compiles the
//! constraint against our own tokenizer — `env` gives it our vocabulary as a token trie and our
//! tokenizer for forced text — and its matcher tells, at each position, which tokens may come
//! next. A front end compiles a request's constraint with a `Compiler` (once per tokenizer; it
//! is the expensive part) into a `Grammar`, off the engine thread; the generation policy gives
//! each sample its own copy and masks its logit rows with it.

mod env;

use crate::error::{Error, Result};
use crate::sample::Allowed;
use crate::tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use std::sync::Arc;
use toktrie::SimpleVob;

/// What a request's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// A JSON schema.
    JsonSchema(serde_json::Value),
    /// A regular expression the whole output matches (Rust `regex` syntax).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A context-free grammar in llguidance's Lark syntax.
    Lark(String),
}

impl Constraint {
    fn grammar(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            Constraint::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            Constraint::JsonSchema(s) => TopLevelGrammar::from_json_schema(compact(s.clone())),
            Constraint::Regex(r) => TopLevelGrammar::from_regex(r),
            Constraint::Choice(c) => {
                if c.is_empty() {
                    return Err(Error::param("choice", "the list of choices is empty"));
                }
                let alternatives: Vec<String> = c.iter().map(|s| regex_syntax::escape(s)).collect();
                TopLevelGrammar::from_regex(&alternatives.join("|"))
            }
            Constraint::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
        })
    }

    /// The request field a compile error is reported against.
    fn field(&self) -> &'static str {
        match self {
            Constraint::JsonObject | Constraint::JsonSchema(_) => "json_schema",
            Constraint::Regex(_) => "regex",
            Constraint::Choice(_) => "choice",
            Constraint::Lark(_) => "grammar",
        }
    }
}

/// `schema` with JSON written compactly — no whitespace between tokens, `,` and `:` as
/// separators — unless it says otherwise (`x-guidance`). Flexible whitespace lets a sampled
/// model pad a document with blank lines until it runs out of tokens.
fn compact(schema: serde_json::Value) -> serde_json::Value {
    let mut schema = match schema {
        serde_json::Value::Bool(true) => serde_json::json!({}),
        other => other,
    };
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}

/// Compiles constraints for one tokenizer.
pub struct Compiler {
    factory: ParserFactory,
    vocab: usize,
}

impl Compiler {
    /// Builds llguidance's view of `tok` (a token trie and its slices: the costly part, done once).
    pub fn new(tok: Arc<Tokenizer>) -> Result<Self> {
        let vocab = tok.vocab_size();
        let env = env::token_env(tok);
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Internal(format!("building the grammar compiler: {e}")))?;
        factory.quiet();
        Ok(Self { factory, vocab })
    }

    /// Compiles `c`; a constraint that does not compile is a `Param` error with llguidance's
    /// message (nothing runs unconstrained).
    pub fn compile(&self, c: &Constraint) -> Result<Grammar> {
        let parser = self
            .factory
            .create_parser(c.grammar()?)
            .map_err(|e| Error::param(c.field(), format!("does not compile: {e}")))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::param(c.field(), format!("does not compile: {e}")));
        }
        Ok(Grammar {
            matcher: Box::new(matcher),
            vocab: self.vocab,
        })
    }
}

/// A compiled constraint with its matcher's state: at the start of the output when it comes
/// from `Compiler::compile`.
pub struct Grammar {
    /// Boxed: a matcher is ~1.7 kB, and requests are moved around by value.
    matcher: Box<Matcher>,
    vocab: usize,
}

impl Clone for Grammar {
    /// An independent copy (its own lexer caches), for another sample or branch.
    fn clone(&self) -> Self {
        Self {
            matcher: Box::new(self.matcher.deep_clone()),
            vocab: self.vocab,
        }
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar")
            .field("vocab", &self.vocab)
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

/// Which tokens may come next.
pub struct Mask(SimpleVob);

impl Mask {
    /// Sets every logit the mask forbids to −∞ (ids past the tokenizer's vocabulary too).
    pub fn apply(&self, row: &mut [f32]) {
        let words = self.0.as_slice();
        let known = self.0.len().min(row.len());
        for (w, chunk) in words.iter().zip(row[..known].chunks_mut(32)) {
            match *w {
                u32::MAX => {}
                0 => chunk.fill(f32::NEG_INFINITY),
                bits => {
                    for (j, v) in chunk.iter_mut().enumerate() {
                        if bits & (1 << j) == 0 {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                }
            }
        }
        row[known..].fill(f32::NEG_INFINITY);
    }

    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.0.len() && self.0.is_allowed(token)
    }

    /// Tokens allowed.
    pub fn count(&self) -> usize {
        self.0.num_set()
    }
}

impl Grammar {
    /// Vocabulary size of the tokenizer it was compiled for.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Whether `token` may come next (cheaper than a mask: one walk of the token's bytes).
    /// `false` when unsure: while the grammar forces bytes that no token has spelled yet, the
    /// matcher's check would judge the token after them, so only the mask can tell.
    pub fn allows(&mut self, token: u32) -> bool {
        (token as usize) < self.vocab
            && self.matcher.compute_ff_bytes().is_empty()
            && self.matcher.validate_tokens(&[token]).ok() == Some(1)
    }

    /// The tokens that may come next (only end-of-generation once the grammar is complete).
    /// An error when no token can continue: the constraint cannot be met with this vocabulary
    /// from here (or exceeded llguidance's limits).
    pub fn mask(&mut self) -> Result<Mask> {
        self.matcher.compute_mask_or_eos().map(Mask).map_err(|e| {
            let e = e.to_string();
            let first = e.lines().next().unwrap_or("");
            Error::InvalidRequest(format!(
                "the constraint cannot be continued with this model's vocabulary ({first})"
            ))
        })
    }

    /// Advances past `token`.
    pub fn consume(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| Error::Internal(format!("the constraint failed at token {token}: {e}")))
    }

    /// True when the output is complete: nothing but the end may follow.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Tokens the grammar forces next, whatever the model says (e.g. JSON punctuation).
    pub fn forced(&mut self) -> Vec<u32> {
        self.matcher.compute_ff_tokens()
    }
}

/// A mask computed once and used for several samples in the same state (the `n` samples of a
/// prompt's first token).
pub struct Shared<'a>(pub &'a Mask);

impl Allowed for Shared<'_> {
    fn allows(&mut self, id: u32) -> bool {
        self.0.allows(id)
    }

    fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        self.0.apply(logits);
        Ok(())
    }
}

impl Allowed for Grammar {
    fn allows(&mut self, id: u32) -> bool {
        Grammar::allows(self, id)
    }

    fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        Grammar::mask(self)?.apply(logits);
        Ok(())
    }
}
