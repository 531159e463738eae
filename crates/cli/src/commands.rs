//! The model-using subcommands: generate, tokenize, perplexity, inspect.

use crate::{Common, GenerateArgs};
use anyhow::{bail, Context, Result};
use everett_engine::engine::{EngineConfig, Event, ScoreRequest, Task};
use everett_engine::generate::{kv_tokens_for, Request};
use everett_engine::gguf::GgufFile;
use everett_engine::model::{Model, KV_BLOCK_SIZE};
use everett_engine::oneshot::{self, generate_batch};
use everett_engine::overflow::{Overflow, Stream};
use everett_engine::perplexity;
use everett_engine::request::Output;
use everett_engine::sample::SamplingParams;
use everett_engine::scheduler::SchedulerConfig;
use everett_engine::tokenizer::Tokenizer;
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// The model file `model` names, else the default model, pulled on first use.
pub fn resolve(model: Option<&Path>) -> Result<std::path::PathBuf> {
    Ok(everett_engine::pull::resolve(model, "python3")?)
}

pub fn load(common: &Common) -> Result<(Model, Tokenizer)> {
    load_from(common, &open(common)?)
}

/// The model file `common` names, after checking the flags that shape loading.
pub fn open(common: &Common) -> Result<GgufFile> {
    let path = resolve(common.model.as_deref())?;
    if common.threads == 0 || common.threads > 256 {
        bail!(
            "--threads must be between 1 and 256, got {}",
            common.threads
        );
    }
    Ok(GgufFile::open(&path)?)
}

/// The model and tokenizer of an opened `file`.
pub fn load_from(common: &Common, file: &GgufFile) -> Result<(Model, Tokenizer)> {
    let tok = Tokenizer::from_gguf(file)?;
    let mut model = Model::from_gguf(file, common.threads)?;
    model.set_kv_type(common.kv_type)?;
    file.release_pages();
    Ok((model, tok))
}

fn request(tok: &Tokenizer, prompt: &str, a: &GenerateArgs) -> Result<Request> {
    Ok(Request {
        prompt_ids: tok.encode(prompt, true, false),
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repeat_penalty: a.repeat_penalty,
            presence_penalty: a.presence_penalty,
            frequency_penalty: a.frequency_penalty,
            seed: a.seed,
            top_logprobs: a.top_logprobs,
            ..Default::default()
        },
        max_tokens: a.max_tokens,
        stop_strings: a.stop.clone(),
        stop_ids: Vec::new(),
        n: a.n,
        ignore_eos: false,
        min_tokens: 0,
        collapse: None,
        logit_bias: Vec::new(),
        constraint: None,
        overflow: a.overflow.overflow()?,
    })
}

fn output_json(tok: &Tokenizer, o: &Output) -> serde_json::Value {
    let piece = |id: u32| String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
    json!({
        "prompt_token_ids": o.prompt_ids,
        "text": o.text,
        "finish_reason": o.finish_reason.map(|f| f.as_str()),
        "tokens": o.tokens.iter().map(|t| json!({
            "id": t.id,
            "text": piece(t.id),
            "logprob": t.logprob,
            "entropy": t.entropy,
            "top_logprobs": t.top.iter().map(|&(id, lp)| json!({"id": id, "text": piece(id), "logprob": lp})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        match v.get("prompt").and_then(|p| p.as_str()) {
            Some(p) => prompts.push(p.to_string()),
            None => bail!("{}:{}: no string field \"prompt\"", path.display(), i + 1),
        }
    }
    Ok(prompts)
}

pub fn generate(common: &Common, a: &GenerateArgs) -> Result<()> {
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let prompts = match (&a.prompt, &a.prompts_file) {
        (Some(p), None) => vec![p.clone()],
        (None, Some(f)) => read_prompts(f)?,
        _ => bail!("give either a PROMPT or --prompts-file"),
    };
    let (mut model, tok) = load(common)?;
    let reqs = prompts
        .iter()
        .map(|p| request(&tok, p, a))
        .collect::<Result<Vec<Request>>>()?;
    if reqs.len() > 1 || a.n > 1 || common.json {
        let outs = generate_batch(&mut model, &tok, reqs)?;
        let mut stdout = std::io::stdout().lock();
        for o in &outs {
            if common.json {
                writeln!(stdout, "{}", output_json(&tok, o))?;
            } else {
                writeln!(stdout, "{}\n", o.text)?;
            }
        }
        return Ok(());
    }
    // One prompt, streamed as it is produced.
    let req = reqs.into_iter().next().expect("one request");
    let kv_tokens = kv_tokens_for(std::slice::from_ref(&req), model.config.context_length);
    let cfg = EngineConfig {
        // A streaming request with a window needs the window's KV, whatever its length.
        kv_tokens: a.overflow.kv_tokens(a.n).unwrap_or(kv_tokens),
        ..EngineConfig::for_seqs(1)
    };
    let mut stdout = std::io::stdout().lock();
    // A write that fails (stdout closed) stops the run; its error is the one reported.
    let mut write_error = None;
    let ran = oneshot::run(&mut model, &tok, cfg, vec![Task::Generate(req)], |_, e| {
        if let Event::Token { token, .. } = e {
            if let Err(err) = write!(stdout, "{}", token.text).and_then(|()| stdout.flush()) {
                write_error = Some(err);
                return Err(everett_engine::Error::Internal("stdout is closed".into()));
            }
        }
        Ok(())
    });
    if let Some(err) = write_error {
        return Err(err.into());
    }
    ran?;
    writeln!(stdout)?;
    Ok(())
}

pub fn tokenize(common: &Common, text: &str, add_special: bool, only_ids: bool) -> Result<()> {
    let path = resolve(common.model.as_deref())?;
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path)?)?;
    let ids = tok.encode(text, add_special, false);
    if only_ids {
        println!("{}", json!(ids));
        return Ok(());
    }
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| String::from_utf8_lossy(&tok.token_bytes(i)).into_owned())
        .collect();
    if common.json {
        println!("{}", json!({"ids": ids, "pieces": pieces}));
    } else {
        for (id, p) in ids.iter().zip(&pieces) {
            println!("{id:>8} {p:?}");
        }
    }
    Ok(())
}

/// llama.cpp's method: consecutive chunks of `ctx` tokens, BOS first in each, score the
/// predictions of the second half of each chunk, ppl = exp(mean NLL).
/// A perplexity-chunking error in the command line's words (`--ctx`, the file).
pub fn chunk_error(e: everett_engine::Error) -> anyhow::Error {
    match e {
        everett_engine::Error::Param {
            name: "ctx",
            problem,
        } => anyhow::anyhow!("--ctx {problem}"),
        everett_engine::Error::InvalidRequest(m) => anyhow::anyhow!("the file: {m} (--ctx)"),
        e => e.into(),
    }
}

pub fn perplexity(common: &Common, file: &Path, ctx: usize) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (mut model, tok) = load(common)?;
    let tokens = tok.encode(&text, true, false);
    let (ppl, scored, n_chunks) =
        perplexity::measure(&mut model, &tok, &tokens, ctx, false, &mut |done, n, p| {
            if !common.json {
                eprintln!("[{done}/{n}] ppl so far {p:.4}");
            }
        })
        .map_err(chunk_error)?;
    if common.json {
        println!("{}", json!({"perplexity": ppl, "tokens_scored": scored}));
    } else {
        println!("perplexity {ppl:.4} over {scored} scored tokens ({n_chunks} chunks of {ctx})");
    }
    Ok(())
}

/// StreamingLLM's measure: the whole text (BOS first) as one sequence that streams through a
/// window of `s.window` tokens, every prediction from position window/2 on scored, so that
/// a text many windows long is read with bounded memory. Reports the peak resident size too.
pub fn perplexity_streamed(common: &Common, file: &Path, s: Stream) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (mut model, tok) = load(common)?;
    let window = s.window.unwrap_or(model.config.context_length);
    let ids = tok.encode(&text, true, false);
    if ids.len() <= window / 2 + 1 {
        bail!(
            "the file has {} tokens; streaming through a window of {window} scores from {} on",
            ids.len(),
            window / 2
        );
    }
    let cfg = EngineConfig {
        kv_tokens: window + KV_BLOCK_SIZE,
        scheduler: SchedulerConfig {
            max_seqs: 1,
            max_logit_rows: 128,
            ..SchedulerConfig::default()
        },
    };
    let n = ids.len();
    let task = Task::Score(ScoreRequest {
        ids,
        from: window / 2,
        overflow: Overflow::Stream(Stream {
            window: Some(window),
            ..s
        }),
    });
    let mut nll: Option<Vec<f32>> = None;
    oneshot::run(&mut model, &tok, cfg, vec![task], |_, e| {
        if let Event::Scored(v) = e {
            nll = Some(v);
        }
        Ok(())
    })?;
    let nll = nll.context("the text ended without a score")?;
    let ppl_of = |v: &[f32]| (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64).exp();
    let ppl = ppl_of(&nll);
    // The predictions `perplexity --ctx window` scores (the second half of each whole chunk of
    // `window` tokens), for a comparison on the same tokens. nll[k] predicts token window/2+k+1.
    let chunked: Vec<f32> = nll
        .iter()
        .enumerate()
        .filter(|&(k, _)| {
            let t = window / 2 + k + 1;
            t < n / window * window && t % window > window / 2
        })
        .map(|(_, &v)| v)
        .collect();
    let same = (!chunked.is_empty()).then(|| ppl_of(&chunked));
    let rss = crate::bench::peak_rss_mb();
    if common.json {
        println!(
            "{}",
            json!({"perplexity": ppl, "tokens_scored": nll.len(), "tokens": n,
                   "perplexity_on_ctx_tokens": same, "ctx_tokens_scored": chunked.len(),
                   "window": window, "sink_tokens": s.sinks, "peak_rss_mb": rss})
        );
    } else {
        println!(
            "perplexity {ppl:.4} over {} scored tokens of {n}, streamed through a window of \
             {window} with {} sink tokens; peak RSS {rss:.0} MiB",
            nll.len(),
            s.sinks
        );
        if let Some(p) = same {
            println!(
                "perplexity {p:.4} over the {} predictions `perplexity --ctx {window}` scores",
                chunked.len()
            );
        }
    }
    Ok(())
}

pub fn inspect(path: &Path) -> Result<()> {
    let f = GgufFile::open(path)?;
    detected(&f);
    println!(
        "GGUF v{}  {} metadata keys, {} tensors",
        f.version,
        f.metadata.len(),
        f.tensors.len()
    );
    for (k, v) in &f.metadata {
        println!("{k:<45} {}", v.summary());
    }
    println!();
    println!(
        "{:<40} {:<6} {:>20} {:>12}",
        "tensor", "type", "shape", "bytes"
    );
    for t in &f.tensors {
        println!(
            "{:<40} {:<6} {:>20} {:>12}",
            t.name,
            t.ty.name(),
            format!("{:?}", t.dims),
            t.n_bytes
        );
    }
    Ok(())
}

/// What everett makes of the file: architecture, attention and RoPE options, experts, tokenizer
/// (or why it refuses them).
fn detected(f: &GgufFile) {
    use everett_engine::model::Config;
    match Config::from_gguf(f) {
        Ok(c) => {
            let rs = &c.rope_scaling;
            let factors = ["rope_freqs.weight", "rope_factors_long.weight"]
                .into_iter()
                .filter(|n| f.tensor_info(n).is_some())
                .collect::<Vec<_>>();
            println!(
                "architecture   {} ({:?}): {} layers, {} heads ({} KV) of {}, width {}, context {}",
                c.arch_name,
                c.arch,
                c.n_layer,
                c.n_head,
                c.n_head_kv,
                c.head_dim,
                c.n_embd,
                c.context_length
            );
            println!(
                "rope           base {}, scaling {} (freq scale {}, attn factor {}, original context {}){}",
                c.rope_base,
                rs.kind,
                rs.freq_scale,
                rs.attn_factor,
                rs.original_context,
                if factors.is_empty() {
                    String::new()
                } else {
                    format!(", frequency factors from {}", factors.join(", "))
                }
            );
            if let Some(w) = c.sliding_window {
                println!(
                    "attention      sliding window {w}, every {}th layer global",
                    c.swa_pattern
                );
            }
            if let (Some(a), Some(l)) = (c.attn_softcap, c.final_softcap) {
                println!("soft-caps      attention {a}, logits {l}");
            }
            if let Some(e) = c.experts {
                println!(
                    "experts        {} of {} per token, hidden {}{}{}",
                    e.used,
                    e.count,
                    e.n_ff,
                    if e.norm_weights {
                        ", weights renormalised"
                    } else {
                        ""
                    },
                    if e.n_ff_shared > 0 {
                        format!(", shared expert of {}", e.n_ff_shared)
                    } else {
                        String::new()
                    }
                );
            }
        }
        Err(e) => println!("architecture   not supported: {e}"),
    }
    match Tokenizer::from_gguf(f) {
        Ok(t) => println!(
            "tokenizer      {} (pre-tokenizer {}), {} tokens, bos {:?}, eos {:?}, add bos {}",
            t.model_name,
            if t.pre_name.is_empty() {
                "-"
            } else {
                &t.pre_name
            },
            t.vocab_size(),
            t.bos,
            t.eos,
            t.add_bos
        ),
        Err(e) => println!("tokenizer      not supported: {e}"),
    }
    println!();
}
