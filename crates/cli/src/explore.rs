//! `everett explore`: many futures of one prompt. Parses flags into `ExploreParams`, runs the
//! engine's search, and prints the terminal tree (colored on a terminal) and/or writes the JSON
//! tree and the offline HTML page. `--json-schema`, `--regex`, `--choice` or `--grammar`
//! constrain every path (the tree then holds only futures that satisfy it).

use crate::commands::load;
use crate::constrain::ConstraintArgs;
use crate::Common;
use anyhow::{anyhow, Context, Result};
use clap::Args;
use everett_engine::engine::ExploreRequest;
use everett_engine::kv::KvType;
use everett_engine::oneshot::explore_request;
use everett_engine::superposition::{render, ExploreParams, Measure};
use everett_server::pages::explore as html;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args)]
#[command(allow_negative_numbers = true)]
pub struct ExploreArgs {
    pub prompt: String,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    /// A local GGUF file instead of the default model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute threads.
    #[arg(long, default_value_t = crate::default_threads())]
    pub threads: usize,
    /// How the KV cache stores keys and values: f16, f32, q8_0 or q4_0.
    #[arg(long, default_value = "f16", value_parser = crate::parse_kv_type)]
    pub kv_type: KvType,
    /// Children proposed by each live path per step.
    #[arg(long, default_value_t = 3)]
    pub branches: usize,
    /// Live paths kept after each step.
    #[arg(long, default_value_t = 10)]
    pub width: usize,
    /// Maximum generated tokens per path.
    #[arg(long, default_value_t = 6)]
    pub steps: usize,
    /// Scales logits before branching; higher spreads the tree.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Children need p >= min_p * p_max.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// max | sample | all.
    #[arg(long, default_value = "max")]
    pub measure: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw the children without replacement instead of taking the top ones.
    #[arg(long)]
    pub stochastic: bool,
    /// Length normalisation: rank paths by score / length^alpha.
    #[arg(long, default_value_t = 0.0)]
    pub alpha: f32,
    /// Mark nodes whose two best next tokens differ by less than this probability.
    #[arg(long, default_value_t = 0.1)]
    pub bifurcation_gap: f32,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Recompute every path from scratch each step instead of forking KV (slow; for comparison).
    #[arg(long)]
    pub no_share: bool,
    /// Write the tree as JSON to FILE ("-" for stdout, replacing the terminal tree).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl ExploreArgs {
    pub fn params(&self) -> Result<ExploreParams> {
        let measure = Measure::parse(&self.measure).ok_or_else(|| {
            anyhow!(
                "--measure must be max, sample or all, got {:?}",
                self.measure
            )
        })?;
        let p = ExploreParams {
            branches: self.branches,
            width: self.width,
            steps: self.steps,
            temperature: self.temperature,
            min_p: self.min_p,
            stochastic: self.stochastic,
            seed: self.seed,
            measure,
            alpha: self.alpha,
            bifurcation_gap: self.bifurcation_gap,
            stop: self.stop.clone(),
            no_share: self.no_share,
        };
        p.validate()?;
        Ok(p)
    }
}

pub fn run(a: &ExploreArgs) -> Result<()> {
    let params = a.params()?;
    let common = Common {
        model: a.model.clone(),
        threads: a.threads,
        json: false,
        kv_type: a.kv_type,
    };
    let (mut model, tok) = load(&common)?;
    let tok = std::sync::Arc::new(tok);
    let ids = tok.encode(&a.prompt, true, false);
    let constraint = a.constraint.compile(&tok)?;
    let req = ExploreRequest {
        prompt: a.prompt.clone(),
        prompt_ids: ids,
        params,
        constraint,
    };
    let e = explore_request(&mut model, &tok, req)?;
    let to_stdout = a.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&e)?;
        if to_stdout {
            println!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &a.html {
        std::fs::write(path, html::page(&e))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !to_stdout {
        print!("{}", render::report(&e, std::io::stdout().is_terminal()));
    }
    Ok(())
}
