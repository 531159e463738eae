//! `everett bench serve`: load-tests any OpenAI-compatible server the way `vllm bench serve`
//! does. `--requests` streaming `/v1/completions` requests (greedy, `ignore_eos`, `max_tokens`
//! each), at most `--concurrency` in flight, all sent as fast as slots free up. Per request:
//! time to first token (TTFT), inter-token latencies (ITL: the gaps between content chunks),
//! time per output token (TPOT = (latency − TTFT) / (tokens − 1)) and end-to-end latency;
//! reported as mean and p50/p95/p99 with output token throughput over the whole run. Output
//! tokens are the server's `usage.completion_tokens` when it reports them, else the content
//! chunks. One warm-up request runs first and is not counted. Works against llama-server too.
//! `--extra-body JSON` merges fields into every `--extra-every`-th request's body (a
//! `response_format` on half the requests, say).

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

#[derive(Args)]
pub struct BenchServeArgs {
    /// The server's base URL, or just HOST:PORT (then plain HTTP).
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Prompts, one per line (plain text, or JSON objects with a "prompt" field); default: 64
    /// built-in varied English prompts of 33-79 tokens. Request i sends prompt i mod count.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// The `model` field to send (default: the first of the server's /v1/models).
    #[arg(long)]
    model_name: Option<String>,
    /// A JSON object whose fields are added to the request bodies (see `--extra-every`).
    #[arg(long)]
    extra_body: Option<String>,
    /// Which requests get `--extra-body`: every Nth (1: all).
    #[arg(long, default_value_t = 1)]
    extra_every: usize,
}

/// Most requests (and requests in flight) one run sends.
const MAX_REQUESTS: usize = 1_000_000;

/// What one request measured.
struct Sample {
    ttft: f64,
    latency: f64,
    tokens: usize,
    /// Gaps between consecutive content chunks.
    itl: Vec<f64>,
}

/// Runs the benchmark; `json` (the global `--json`) prints the result as one JSON object.
pub fn run(a: &BenchServeArgs, json: bool) -> Result<()> {
    if a.requests == 0 || a.concurrency == 0 || a.max_tokens == 0 {
        bail!("--requests, --concurrency and --max-tokens must be at least 1");
    }
    if a.requests > MAX_REQUESTS || a.concurrency > MAX_REQUESTS {
        bail!("--requests and --concurrency must be at most {MAX_REQUESTS}");
    }
    let prompts = match &a.prompts {
        Some(p) => read_prompts(p)?,
        None => builtin_prompts(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(bench(a, prompts))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

async fn bench(a: &BenchServeArgs, prompts: Vec<String>) -> Result<Value> {
    let base = a.url.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    // A fresh connection per request: servers that close kept-alive connections after a stream
    // (llama-server does) would otherwise fail requests sent on a stale one.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let model = match &a.model_name {
        Some(m) => m.clone(),
        None => {
            let v: Value = serde_json::from_slice(
                &client
                    .get(format!("{base}/v1/models"))
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?
                    .bytes()
                    .await?,
            )?;
            v["data"][0]["id"].as_str().unwrap_or("default").to_string()
        }
    };
    let extra = match &a.extra_body {
        Some(t) => match serde_json::from_str(t) {
            Ok(Value::Object(m)) => Some(m),
            _ => bail!("--extra-body must be a JSON object"),
        },
        None => None,
    };
    if a.extra_every == 0 {
        bail!("--extra-every must be at least 1");
    }
    let one = Arc::new(Request {
        client,
        url: format!("{base}/v1/completions"),
        model: model.clone(),
        max_tokens: a.max_tokens,
        extra,
    });
    one.send(&prompts[0], false)
        .await
        .context("the warm-up request")?;
    let slots = Arc::new(Semaphore::new(a.concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(a.requests);
    for i in 0..a.requests {
        let permit = slots.clone().acquire_owned().await?;
        let (one, prompt) = (one.clone(), prompts[i % prompts.len()].clone());
        let with_extra = i % a.extra_every == 0;
        tasks.push(tokio::spawn(async move {
            let r = one.send(&prompt, with_extra).await;
            drop(permit);
            r
        }));
    }
    let mut samples = Vec::with_capacity(a.requests);
    let mut errors = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(s) => samples.push(s),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let duration = start.elapsed().as_secs_f64();
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let ms = |v: Vec<f64>| stats(v.into_iter().map(|x| x * 1e3).collect());
    Ok(json!({
        "url": base,
        "model": model,
        "requests": a.requests,
        "concurrency": a.concurrency,
        "max_tokens": a.max_tokens,
        "successful": samples.len(),
        "failed": errors.len(),
        "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "duration_s": duration,
        "output_tokens": tokens,
        "request_throughput": samples.len() as f64 / duration,
        "output_throughput": tokens as f64 / duration,
        "ttft_ms": ms(samples.iter().map(|s| s.ttft).collect()),
        "tpot_ms": ms(samples
            .iter()
            .filter(|s| s.tokens > 1)
            .map(|s| (s.latency - s.ttft) / (s.tokens - 1) as f64)
            .collect()),
        "itl_ms": ms(samples.iter().flat_map(|s| s.itl.iter().copied()).collect()),
        "e2e_ms": ms(samples.iter().map(|s| s.latency).collect()),
    }))
}

/// What every request shares.
struct Request {
    client: reqwest::Client,
    url: String,
    model: String,
    max_tokens: usize,
    extra: Option<serde_json::Map<String, Value>>,
}

impl Request {
    /// Sends one streaming request (with the extra body fields when `with_extra`) and times
    /// its chunks.
    async fn send(&self, prompt: &str, with_extra: bool) -> Result<Sample> {
        let mut body = json!({
            "model": self.model, "prompt": prompt, "max_tokens": self.max_tokens,
            "temperature": 0, "ignore_eos": true, "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let (true, Some(extra), Some(obj)) = (with_extra, &self.extra, body.as_object_mut()) {
            obj.extend(extra.clone());
        }
        let start = Instant::now();
        let mut resp = (self.client.post(&self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("{status}: {}", resp.text().await.unwrap_or_default());
        }
        let (mut buf, mut chunks, mut usage) = (String::new(), Vec::new(), None);
        while let Some(bytes) = resp.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(at) = buf.find("\n\n") {
                let record: String = buf.drain(..at + 2).collect();
                for data in record.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    if data == "[DONE]" {
                        continue;
                    }
                    let v: Value = serde_json::from_str(data)
                        .with_context(|| format!("a chunk that is not JSON: {data}"))?;
                    if let Some(e) = v.get("error") {
                        bail!("the server failed the stream: {e}");
                    }
                    if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                        usage = Some(n as usize);
                    }
                    let text = v["choices"][0]["text"].as_str().unwrap_or("");
                    if !text.is_empty() {
                        chunks.push(start.elapsed().as_secs_f64());
                    }
                }
            }
        }
        let Some(&ttft) = chunks.first() else {
            bail!("the stream carried no text");
        };
        Ok(Sample {
            ttft,
            latency: start.elapsed().as_secs_f64(),
            tokens: usage.unwrap_or(chunks.len()),
            itl: chunks.windows(2).map(|w| w[1] - w[0]).collect(),
        })
    }
}

/// Mean and percentiles of `v` (nearest rank); zeros when empty.
fn stats(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| match v.len() {
        0 => 0.0,
        n => v[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1],
    };
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    json!({"mean": mean, "p50": pct(50.0), "p95": pct(95.0), "p99": pct(99.0)})
}

fn print_report(r: &Value) {
    println!(
        "{} of {} requests ok ({} failed), concurrency {}, {} tokens each, {:.1} s",
        r["successful"],
        r["requests"],
        r["failed"],
        r["concurrency"],
        r["max_tokens"],
        r["duration_s"].as_f64().unwrap_or(0.0)
    );
    for e in r["first_errors"].as_array().into_iter().flatten() {
        println!("  error: {}", e.as_str().unwrap_or_default());
    }
    println!(
        "output throughput {:.1} tok/s, {:.2} requests/s",
        r["output_throughput"].as_f64().unwrap_or(0.0),
        r["request_throughput"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>10}",
        "ms", "mean", "p50", "p95", "p99"
    );
    for key in ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"] {
        let s = &r[key];
        let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
        println!(
            "{:<6} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            key.trim_end_matches("_ms"),
            f("mean"),
            f("p50"),
            f("p95"),
            f("p99")
        );
    }
}

fn read_prompts(path: &PathBuf) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v["prompt"].is_string() => v["prompt"].as_str().unwrap_or(l).to_string(),
            _ => l.to_string(),
        })
        .collect();
    if prompts.is_empty() {
        bail!("{} holds no prompts", path.display());
    }
    Ok(prompts)
}

/// Sentences that the built-in prompts continue with.
const SENTENCES: [&str; 16] = [
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp.",
    "Scientists recently discovered a new species of frog in the rainforests of Ecuador.",
    "Our team spent the whole quarter rewriting the billing system from scratch.",
    "She opened the letter slowly, unsure whether it carried good news or bad.",
    "The recipe calls for two cups of flour, a pinch of salt and fresh butter.",
    "Economists disagree about whether interest rates will fall next year.",
    "The museum's newest exhibit explores the history of maps and navigation.",
    "After the storm, the village gathered to repair the damaged bridge together.",
    "Learning to play the violin as an adult requires patience and daily practice.",
    "The spacecraft entered orbit around Jupiter after a journey of five years.",
    "Local farmers have started planting drought-resistant crops this season.",
    "He explained the rules of chess to his grandson on a rainy afternoon.",
    "The city council voted to turn the abandoned railway into a public park.",
    "A good night's sleep improves memory, mood and concentration.",
    "The detective noticed a muddy footprint just inside the kitchen door.",
    "Volunteers planted three thousand trees along the river last spring.",
];

/// Who and where the built-in prompts open with: 64 distinct openings, so that no two prompts
/// share a first KV block (a prefix cache gets no help from the set).
const SUBJECTS: [&str; 8] = [
    "The old fisherman",
    "A young engineer",
    "My grandmother",
    "The new mayor",
    "A curious child",
    "The tired doctor",
    "An astronaut on leave",
    "The village baker",
];
const SETTINGS: [&str; 8] = [
    "in the quiet harbor",
    "at the edge of the desert",
    "during the winter festival",
    "on a crowded night train",
    "inside the abandoned factory",
    "beneath the northern lights",
    "at the top of the mountain",
    "in a small bookshop",
];

/// 64 varied English prompts of about 30 to 90 tokens: a distinct opening, one to four further
/// sentences, and an instruction to continue.
fn builtin_prompts() -> Vec<String> {
    (0..64)
        .map(|i| {
            let mut p = vec![format!(
                "{} was waiting {}.",
                SUBJECTS[i % 8],
                SETTINGS[i / 8]
            )];
            for k in 0..1 + i % 4 {
                p.push(SENTENCES[(3 * i + 5 * k) % 16].to_string());
            }
            p.push("Continue the story in your own words:".into());
            p.join(" ")
        })
        .collect()
}
