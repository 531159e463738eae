//! `everett quantize IN OUT --type T`: llama-quantize's file types and mixes, byte for byte, and
//! the report it does not give: per tensor the old and new type, size, RMSE and largest error of
//! the weights; size and bits per weight of the whole file. The work is `everett_engine::quantize`.

use anyhow::{bail, Context, Result};
use clap::Args;
use everett_engine::gguf::GgufFile;
use everett_engine::model::Model;
use everett_engine::quantize::{quantize_file, FileType, Imatrix, Options, Report, TensorReport};
use everett_engine::tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct QuantizeArgs {
    /// The model to read (F32, F16 or BF16; an already quantized file needs --allow-requantize).
    pub input: PathBuf,
    /// Where to write the quantized model.
    pub output: PathBuf,
    /// File type: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L,
    /// Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS (Q3_K, Q4_K, Q5_K mean the _M mixes).
    #[arg(long = "type", value_parser = parse_file_type)]
    pub ftype: FileType,
    /// Leave output.weight as it is.
    #[arg(long)]
    pub keep_output: bool,
    /// Convert tensors that are already quantized.
    #[arg(long)]
    pub allow_requantize: bool,
    /// An importance matrix (`everett imatrix` or llama-imatrix; GGUF or .dat) weighting each
    /// column's rounding error in the types that take one.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Threads converting rows.
    #[arg(long, default_value_t = crate::default_threads())]
    pub threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also measure perplexity on this text before and after (llama.cpp's method).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Tokens per perplexity chunk for --eval.
    #[arg(long, default_value_t = 512)]
    pub eval_ctx: usize,
}

/// Perplexity before and after, on one text.
#[derive(Serialize)]
struct Eval {
    file: String,
    ctx: usize,
    before: f64,
    after: f64,
    change_percent: f64,
}

/// `everett perplexity` on `model` (all threads, the default KV type).
fn perplexity(model: &Path, text: &str, ctx: usize, threads: usize) -> Result<f64> {
    let file = GgufFile::open(model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let mut m = Model::from_gguf(&file, threads)?;
    file.release_pages();
    let tokens = tok.encode(text, true, false);
    let (ppl, _, _) =
        everett_engine::perplexity::measure(&mut m, &tok, &tokens, ctx, false, &mut |_, _, _| {})?;
    Ok(ppl)
}

fn parse_file_type(s: &str) -> Result<FileType, String> {
    FileType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = FileType::names().collect();
        format!("unknown type {s:?} (one of {})", names.join(", "))
    })
}

pub fn run(args: &QuantizeArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let opts = Options {
        ftype: args.ftype,
        keep_output: args.keep_output,
        allow_requantize: args.allow_requantize,
        threads: args.threads,
        imatrix: match &args.imatrix {
            Some(p) => Some((Imatrix::read(p)?, p.display().to_string())),
            None => None,
        },
    };
    // Drawn on stderr only when it is a terminal.
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {elapsed} {msg}")
            .expect("a valid template"),
    );
    let mut progress = |done: usize, total: usize, t: &TensorReport| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(t.name.clone());
    };
    let report = quantize_file(&args.input, &args.output, &opts, &mut progress);
    bar.finish_and_clear();
    let report = report?;
    let eval = match &args.eval {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let before = perplexity(&args.input, &text, args.eval_ctx, args.threads)?;
            let after = perplexity(&args.output, &text, args.eval_ctx, args.threads)?;
            Some(Eval {
                file: f.display().to_string(),
                ctx: args.eval_ctx,
                before,
                after,
                change_percent: 100.0 * (after / before - 1.0),
            })
        }
        None => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["eval"] = serde_json::to_value(&eval)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_report(&report);
        if let Some(e) = eval {
            println!(
                "perplexity on {} (ctx {}): {:.4} → {:.4} ({:+.2} %)",
                e.file, e.ctx, e.before, e.after, e.change_percent
            );
        }
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_report(r: &Report) {
    println!(
        "{:<40} {:<20} {:>6} → {:<6} {:>10} {:>10} {:>10}",
        "tensor", "shape", "type", "type", "MiB", "rmse", "max |err|"
    );
    for t in &r.tensors {
        let shape: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        let err = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
        println!(
            "{:<40} {:<20} {:>6} → {:<6} {:>10.3} {:>10} {:>10}",
            t.name,
            shape.join("×"),
            t.old_type,
            t.new_type,
            mib(t.new_bytes as u64),
            err(t.rmse),
            err(t.max_abs_error)
        );
    }
    println!(
        "{}: {:.2} MiB ({:.2} bits/weight) → {:.2} MiB ({:.2} bits/weight) in {:.1} s{}",
        r.file_type,
        mib(r.old_bytes),
        r.old_bpw,
        mib(r.new_bytes),
        r.new_bpw,
        r.seconds,
        if r.fallbacks > 0 {
            format!("; {} tensors fell back to a 32-block type", r.fallbacks)
        } else {
            String::new()
        }
    );
}
