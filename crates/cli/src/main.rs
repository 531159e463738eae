//! The `everett` command line: generate, explore, tokenize, perplexity, inspect, quantize, pull,
//! bench.
//! Parsing flags and printing live here; everything else is `everett-engine`.

#![forbid(unsafe_code)]

mod bench;
mod bench_collapse;
mod bench_constraint;
mod bench_depth;
mod bench_engine;
mod bench_serve;
mod chat;
mod collapse;
mod commands;
mod constrain;
mod explore;
mod imatrix;
mod logging;
mod overflow;
mod quantize;
mod serve;
mod template;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use everett_engine::kv::KvType;
use everett_engine::overflow::Overflow;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "everett",
    version,
    about = "An LLM inference engine: many prompts, many futures"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Flags every model-using command takes.
#[derive(Args, Clone)]
pub struct Common {
    /// A local GGUF file instead of the default model.
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
    /// Compute threads.
    #[arg(long, global = true, default_value_t = default_threads())]
    pub threads: usize,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// How the KV cache stores keys and values: f16 (half the memory of f32), f32 (exact),
    /// q8_0 or q4_0 (GGML blocks: 53 % / 28 % of f16's memory; heads of whole 32-value blocks).
    #[arg(long, global = true, default_value = "f16", value_parser = parse_kv_type)]
    pub kv_type: KvType,
}

fn parse_kv_type(s: &str) -> Result<KvType, String> {
    KvType::parse(s).ok_or_else(|| format!("expected f16, f32, q8_0 or q4_0, got {s:?}"))
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[derive(Args)]
pub struct GenerateArgs {
    /// The prompt (or use --prompts-file).
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Report the top K alternatives of each token (with --json).
    #[arg(long, default_value_t = 0)]
    pub top_logprobs: usize,
    /// One JSON object {"prompt": ...} per line; all prompts run as one batch.
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Samples per prompt (they share the prompt's KV); sample i is seeded with seed + i.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    #[command(flatten)]
    pub overflow: overflow::OverflowArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text from a prompt, streaming it to stdout.
    Generate {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: GenerateArgs,
    },
    /// Greedy generation that commits several tokens per forward pass (Jacobi / lookahead
    /// decoding): the same tokens as `generate --temperature 0`, in fewer passes.
    Collapse(collapse::CollapseArgs),
    /// Explore many futures of one prompt as a tree ("superposition"), then measure.
    Explore(explore::ExploreArgs),
    /// Show the token ids of a text.
    Tokenize {
        #[command(flatten)]
        common: Common,
        /// The text (or use --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Tokenize this file's contents instead.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Print only the ids, as one JSON list.
        #[arg(long)]
        ids: bool,
        /// Add BOS (as the model does for prompts).
        #[arg(long)]
        add_special: bool,
    },
    /// Perplexity of a text file, computed like llama.cpp's perplexity tool.
    Perplexity {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// With `--context-overflow stream`: the whole text as one sequence through a window
        /// of `--window` tokens (StreamingLLM), scored from position window/2 on.
        #[command(flatten)]
        overflow: overflow::OverflowArgs,
    },
    /// Print a GGUF file's metadata and tensor table.
    Inspect { file: PathBuf },
    /// Quantize a model into a llama.cpp file type (the same bytes llama-quantize writes),
    /// reporting each tensor's error.
    Quantize(quantize::QuantizeArgs),
    /// Calibrate for quantization: an importance matrix of the model's inputs over a text
    /// (llama.cpp's format), for `quantize --imatrix`.
    Imatrix(imatrix::ImatrixArgs),
    /// Render a chat template with the variables of a JSON file, exactly as the server does.
    Template(template::TemplateArgs),
    /// Chat with the model in the terminal (its chat template, history, /reset, Ctrl-C stops
    /// an answer).
    Chat(chat::ChatArgs),
    /// An OpenAI-compatible HTTP server with the playground and explorer page.
    Serve(serve::ServeArgs),
    /// Download the default model into the cache.
    Pull {
        /// Re-verify the checksum of an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Measure prefill, decode and batched decode speed (`bench serve`: load-test a server).
    Bench {
        #[command(subcommand)]
        target: Option<BenchTarget>,
        #[command(flatten)]
        common: Common,
        /// Run one part only (pp128, pp512, tg128, parallel, explore, collapse, constraint, engine, depth).
        #[arg(long)]
        only: Option<String>,
    },
}

/// Output into a closed pipe (`everett inspect FILE | head`) ends the program quietly with
/// status 0, as Unix tools end on SIGPIPE: `println!` panics on it, so that one panic exits
/// before anything is printed; every other panic is reported as usual.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Load-test an OpenAI-compatible server (ours or another) like `vllm bench serve`.
    Serve(bench_serve::BenchServeArgs),
}

fn main() {
    quiet_on_closed_pipe();
    if let Err(e) = run() {
        // Output into a closed pipe (`everett generate … | head`) is the reader's choice.
        let closed_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if closed_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Generate { common, args } => commands::generate(&common, &args),
        Cmd::Explore(args) => explore::run(&args),
        Cmd::Collapse(args) => collapse::run(&args),
        Cmd::Tokenize {
            common,
            text,
            file,
            ids,
            add_special,
        } => {
            let text = match (text, file) {
                (Some(t), _) => t,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
                (None, None) => unreachable!("clap requires one"),
            };
            commands::tokenize(&common, &text, add_special, ids)
        }
        Cmd::Perplexity {
            common,
            file,
            ctx,
            overflow,
        } => match overflow.overflow()? {
            Overflow::Stop => commands::perplexity(&common, &file, ctx),
            Overflow::Stream(s) => commands::perplexity_streamed(&common, &file, s),
        },
        Cmd::Inspect { file } => commands::inspect(&file),
        Cmd::Quantize(args) => quantize::run(&args),
        Cmd::Imatrix(args) => imatrix::run(&args),
        Cmd::Template(args) => template::run(&args),
        Cmd::Serve(args) => serve::run(&args),
        Cmd::Chat(args) => chat::run(&args),
        Cmd::Pull { force } => everett_engine::pull::pull("python3", force)
            .map(|_| ())
            .map_err(Into::into),
        Cmd::Bench {
            target: Some(BenchTarget::Serve(args)),
            common,
            ..
        } => bench_serve::run(&args, common.json),
        Cmd::Bench { common, only, .. } => bench::run(&common, only.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks of the whole command line, which otherwise run only in
    /// debug builds (as a panic on first use).
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
