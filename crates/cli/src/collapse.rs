//! `everett collapse`: greedy generation that commits several tokens per forward pass
//! (Jacobi / lookahead decoding, seed 003). It streams the text, then shows each pass: how
//! many tokens it committed and the entropy over its window as a sparkline. `--json` prints the
//! run's record, `--html FILE` writes the self-contained picture. `--json-schema`, `--regex`,
//! `--choice` or `--grammar` constrain it (still exactly constrained greedy decoding).

use crate::commands::load;
use crate::constrain::ConstraintArgs;
use crate::Common;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use everett_engine::collapse::{CollapseParams, Mode};
use everett_engine::engine::Event;
use everett_engine::generate::Request;
use everett_engine::oneshot::collapse;
use everett_engine::oneshot::Collapsed;
use everett_engine::sample::SamplingParams;
use everett_server::pages::collapse as html;
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Jacobi,
    Lookahead,
}

#[derive(Args)]
pub struct CollapseArgs {
    #[command(flatten)]
    pub common: Common,
    pub prompt: String,
    /// W: most guessed tokens per chain.
    #[arg(long, default_value_t = CollapseParams::default().window)]
    pub window: usize,
    /// N: n-gram size of the lookahead pool.
    #[arg(long, default_value_t = CollapseParams::default().ngram)]
    pub ngram: usize,
    /// G: most chains verified per pass.
    #[arg(long, default_value_t = CollapseParams::default().candidates)]
    pub candidates: usize,
    #[arg(long, value_enum, default_value = "lookahead")]
    pub mode: ModeArg,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Only 0: collapse decoding is greedy (anything else is refused with the reason).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    /// Under a constraint (--json-schema, --regex, --choice, --grammar), do not guess the tokens
    /// it forces (to measure what those guesses save).
    #[arg(long)]
    pub no_fast_forward: bool,
    /// Write the pass-by-pass picture as a self-contained HTML page.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

impl CollapseArgs {
    pub fn params(&self) -> CollapseParams {
        CollapseParams {
            mode: match self.mode {
                ModeArg::Jacobi => Mode::Jacobi,
                ModeArg::Lookahead => Mode::Lookahead,
            },
            window: self.window,
            ngram: self.ngram,
            candidates: self.candidates,
            fast_forward: !self.no_fast_forward,
        }
    }
}

pub fn run(a: &CollapseArgs) -> Result<()> {
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let (mut model, tok) = load(&a.common)?;
    let tok = std::sync::Arc::new(tok);
    let sampling = SamplingParams {
        temperature: a.temperature,
        ..SamplingParams::default()
    };
    let mut req = Request::new(tok.encode(&a.prompt, true, false), sampling, a.max_tokens);
    req.stop_strings = a.stop.clone();
    req.constraint = a.constraint.compile(&tok)?;
    req.collapse = Some(a.params());
    let json = a.common.json;
    let mut stdout = std::io::stdout().lock();
    let run = collapse(&mut model, &tok, req, |e| {
        if let (false, Event::Token { token, .. }) = (json, e) {
            let _ = write!(stdout, "{}", token.text);
            let _ = stdout.flush();
        }
    })?;
    if json {
        writeln!(stdout, "{}", run.to_json(&tok))?;
    } else {
        writeln!(stdout, "\n")?;
        write!(stdout, "{}", summary(&run))?;
    }
    if let Some(path) = &a.html {
        std::fs::write(path, html::page(&run, &tok, &a.prompt))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// One line per pass: tokens committed, then the entropy of each window position.
fn summary(run: &Collapsed) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut s = String::new();
    for (i, p) in run.passes.iter().enumerate() {
        let spark: String = p
            .entropies
            .iter()
            .enumerate()
            .map(|(j, &h)| {
                let bar = BARS[((h / 5.0 * 7.0).round() as usize).min(7)];
                // A bar after '|' stayed in superposition: it was not committed.
                if j == p.accepted {
                    format!("|{bar}")
                } else {
                    bar.to_string()
                }
            })
            .collect();
        s += &format!(
            "pass {:>3}: +{} of {:>2} guessed ({:?})  {spark}\n",
            i + 1,
            p.accepted,
            p.guessed,
            p.source
        );
    }
    s += &format!(
        "{} tokens in {} passes: {:.2} tokens/pass, {:.0} ms\n",
        run.output.tokens.len(),
        run.passes.len(),
        run.tokens_per_pass(),
        run.wall_ms
    );
    s
}
