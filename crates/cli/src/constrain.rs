//! The constraint flags `explore` and `collapse` share: `--json-schema` (a file or the JSON),
//! `--regex`, `--choice` (repeated) or `--grammar` (a Lark file), compiled for the model's
//! tokenizer.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use everett_engine::constraint::{Compiler, Constraint, Grammar};
use everett_engine::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ConstraintArgs {
    /// The output must match this JSON schema (a file, or the schema's JSON itself).
    #[arg(long, conflicts_with_all = ["regex", "choice", "grammar"])]
    pub json_schema: Option<String>,
    /// The output must match this regular expression.
    #[arg(long, conflicts_with_all = ["choice", "grammar"])]
    pub regex: Option<String>,
    /// The output must be one of these strings (repeat the flag).
    #[arg(long, conflicts_with = "grammar")]
    pub choice: Vec<String>,
    /// The output must match this grammar (a file in llguidance's Lark syntax).
    #[arg(long)]
    pub grammar: Option<PathBuf>,
}

impl ConstraintArgs {
    /// The constraint the flags ask for, if any.
    pub fn constraint(&self) -> Result<Option<Constraint>> {
        if let Some(s) = &self.json_schema {
            let text = if std::path::Path::new(s).is_file() {
                std::fs::read_to_string(s).with_context(|| format!("reading {s}"))?
            } else {
                s.clone()
            };
            let schema = serde_json::from_str(&text)
                .map_err(|e| anyhow!("--json-schema is neither a file nor JSON: {e}"))?;
            return Ok(Some(Constraint::JsonSchema(schema)));
        }
        if let Some(r) = &self.regex {
            return Ok(Some(Constraint::Regex(r.clone())));
        }
        if !self.choice.is_empty() {
            return Ok(Some(Constraint::Choice(self.choice.clone())));
        }
        if let Some(p) = &self.grammar {
            let g =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            return Ok(Some(Constraint::Lark(g)));
        }
        Ok(None)
    }

    /// The constraint compiled for `tok`, if the flags ask for one.
    pub fn compile(&self, tok: &Arc<Tokenizer>) -> Result<Option<Grammar>> {
        self.constraint()?
            .map(|c| Ok(Compiler::new(tok.clone())?.compile(&c)?))
            .transpose()
    }
}
