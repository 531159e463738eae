//! `everett imatrix --file calib.txt -o imatrix.gguf`: calibration for post-training
//! quantization. Runs the model over the text in perplexity chunks and writes llama.cpp's
//! importance-matrix format (what `everett quantize --imatrix` and llama-quantize read).

use crate::commands::load;
use crate::Common;
use anyhow::{Context, Result};
use clap::Args;
use everett_engine::calibrate;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImatrixArgs {
    #[command(flatten)]
    pub common: Common,
    /// The calibration text: representative of what the model will read, not the text you
    /// will evaluate on.
    #[arg(long)]
    pub file: PathBuf,
    /// Tokens per chunk (as llama-imatrix's -c).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Where to write the matrix.
    #[arg(short, long, default_value = "imatrix.gguf")]
    pub output: PathBuf,
}

pub fn run(args: &ImatrixArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let (mut model, tok) = load(&args.common)?;
    let json = args.common.json;
    let mut progress = |done: usize, n: usize, ppl: f64| {
        if !json {
            eprintln!("[{done}/{n}] ppl so far {ppl:.4}");
        }
    };
    let dataset = args.file.display().to_string();
    let (m, report) =
        calibrate::imatrix(&mut model, &tok, &text, args.ctx, &dataset, &mut progress)
            .map_err(crate::commands::chunk_error)?;
    m.write(&args.output)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} matrices over {} chunks of {} tokens (perplexity {:.4}) → {}",
            report.entries,
            report.chunks,
            report.ctx,
            report.perplexity,
            args.output.display()
        );
    }
    Ok(())
}
