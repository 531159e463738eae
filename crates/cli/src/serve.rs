//! `everett serve`: binds the port at once (every route answers 503 while the model loads, so
//! `GET /health` tells a supervisor when it is ready), loads the model, starts the engine thread
//! and serves `everett-server`'s router. Ctrl-C or SIGTERM stops accepting connections and lets
//! open requests finish for up to `DRAIN_LIMIT`; then open connections are closed, the engine
//! gets `SHUTDOWN_GRACE` to finish what still runs before it aborts the rest, and serve exits 0.

use crate::commands::{load_from, open};
use crate::logging::{self, LogFormat};
use crate::Common;
use anyhow::{Context, Result};
use clap::Args;
use everett_engine::engine::handle::spawn;
use everett_engine::engine::{Engine, EngineConfig};
use everett_engine::gguf::{GgufFile, Value};
use everett_engine::kernels::matmul::Isa;
use everett_engine::model::Model;
use everett_engine::scheduler::SchedulerConfig;
use everett_server::listen::{self, ConnLimits};
use everett_server::tools::Format;
use everett_server::{loading, router, ChatTemplate, Limits, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for open requests after Ctrl-C / SIGTERM (a slow reader cannot hold the exit).
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model name clients send (default: the GGUF file's stem).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Running sequences at most.
    #[arg(long, default_value_t = 64)]
    max_running: usize,
    /// Sequences waiting for admission (a request counts its prompts × n) before new requests
    /// get 429; a request bigger than this gets 400.
    #[arg(long, default_value_t = 1024)]
    max_waiting: usize,
    /// Sequences one request may run (prompts × n, or an exploration's width); more is a 400.
    #[arg(long, default_value_t = 256)]
    max_seqs_per_request: usize,
    /// Connections open at once; more wait in the kernel's backlog until one closes.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers; keep-alive connections idle this long
    /// are closed.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Ignore request fields this server does not know (with a warning in the log) instead of
    /// refusing them with 400, for old clients that send extra keys.
    #[arg(long)]
    lenient_fields: bool,
    /// KV cache capacity in tokens.
    #[arg(long, default_value_t = 16_384)]
    kv_tokens: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health and / (the page, which
    /// asks for the key).
    #[arg(long)]
    api_key: Option<String>,
    /// A Jinja chat template file to use instead of the GGUF's (vLLM's `--chat-template`).
    #[arg(long, value_name = "FILE")]
    chat_template: Option<std::path::PathBuf>,
    /// How the model writes tool calls: hermes, llama3_json, mistral or generic (default: read
    /// from the chat template; generic for a template that teaches none).
    #[arg(long, value_name = "NAME")]
    tool_call_parser: Option<String>,
    /// What a request without `context_overflow` does at the end of the context, and the
    /// window of the requests that stream.
    #[command(flatten)]
    overflow: crate::overflow::OverflowArgs,
    /// How log lines look on stderr (filter them with RUST_LOG; default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

pub fn run(a: &ServeArgs) -> Result<()> {
    if !(a.header_timeout > 0.0 && a.header_timeout <= 3600.0) || a.max_connections == 0 {
        anyhow::bail!(
            "--header-timeout must be in (0, 3600] seconds and --max-connections at least 1"
        );
    }
    if a.max_running == 0 || a.kv_tokens < 16 || a.max_waiting == 0 || a.max_seqs_per_request == 0 {
        anyhow::bail!("--max-running, --max-waiting and --max-seqs-per-request must be at least 1 and --kv-tokens at least 16");
    }
    logging::init(a.log_format)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = format!("{}:{}", a.host, a.port);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&addr))
        .with_context(|| format!("cannot listen on {addr}"))?;
    // With --port 0 the system picks the port: report the one bound.
    let addr = listener.local_addr().map_or(addr, |a| a.to_string());
    let (gate, slot) = loading();
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let conn_limits = ConnLimits {
        max_connections: a.max_connections,
        header_timeout: Duration::from_secs_f64(a.header_timeout),
    };
    let server = rt.spawn(async move {
        let serving = listen::serve(listener, gate, conn_limits, async move {
            stop_signal().await;
            notify.notify_one();
        });
        let drain_limit = async {
            stopping.notified().await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        };
        tokio::select! {
            () = serving => {}
            () = drain_limit => {
                tracing::warn!("requests still open after {DRAIN_LIMIT:?}; closing them");
            }
        }
    });
    tracing::info!("listening on http://{addr}, loading the model");
    // One opening of the file; the template is compiled first, so a broken one fails before
    // the weights load.
    let file = open(&a.common)?;
    let chat_template = served_template(a, &file)?;
    let (model, tok) = load_from(&a.common, &file)?;
    drop(file);
    check_kv_size(&model, a)?;
    let overflow = a.overflow.overflow()?;
    a.overflow.check(&model, a.kv_tokens)?;
    let name = a.served_model_name.clone().unwrap_or_else(|| {
        let path = crate::commands::resolve(a.common.model.as_deref()).ok();
        path.and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "everett".into())
    });
    let tok = Arc::new(tok);
    let context = model.config.context_length;
    tracing::info!(
        model = %name,
        architecture = %model.config.arch_name,
        layers = model.config.n_layer,
        context,
        vocab = model.config.vocab,
        isa = ?Isa::detect().family(),
        threads = model.threads(),
        kv_tokens = a.kv_tokens,
        kv_mb = model.kv_config(a.kv_tokens).bytes().unwrap_or(0) >> 20,
        max_running = a.max_running,
        max_waiting = a.max_waiting,
        "model loaded"
    );
    let cfg = EngineConfig {
        kv_tokens: a.kv_tokens,
        scheduler: SchedulerConfig {
            max_seqs: a.max_running,
            max_waiting: a.max_waiting,
            ..SchedulerConfig::default()
        },
    };
    let (handle, engine_thread) = spawn(Engine::new(model, tok.clone(), cfg));
    let app = router(
        handle.clone(),
        ServerConfig {
            overflow,
            model_name: name.clone(),
            tokenizer: tok,
            context,
            api_key: a.api_key.clone(),
            chat_template,
            limits: Limits {
                max_seqs_per_request: a.max_seqs_per_request,
                max_waiting: a.max_waiting,
                lenient_fields: a.lenient_fields,
                ..Limits::default()
            },
        },
    );
    let _ = slot.set(app);
    tracing::info!("model `{name}` ready on http://{addr}");
    rt.block_on(server).context("serving")?;
    handle.shutdown(SHUTDOWN_GRACE);
    let _ = engine_thread.join();
    Ok(())
}

/// Refuses a KV cache bigger than this machine's memory, naming the sizes.
fn check_kv_size(model: &Model, a: &ServeArgs) -> Result<()> {
    model.check_kv_memory(a.kv_tokens).with_context(|| {
        format!(
            "--kv-tokens {} (--max-running {})",
            a.kv_tokens, a.max_running
        )
    })
}

/// The chat template `serve` runs: `--chat-template`'s file, else the GGUF's; tool calls read
/// as `--tool-call-parser` says, else as the template teaches.
fn served_template(a: &ServeArgs, file: &GgufFile) -> Result<Option<ChatTemplate>> {
    let (template, src) = match &a.chat_template {
        Some(path) => {
            let src = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the chat template {}", path.display()))?;
            let t = ChatTemplate::jinja(src.clone())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (Some(t), Some(src))
        }
        None => {
            let src = match file.get("tokenizer.chat_template") {
                Some(Value::Str(s)) => Some(s.clone()),
                _ => None,
            };
            (chat_template(file)?, src)
        }
    };
    let Some(name) = &a.tool_call_parser else {
        return Ok(template);
    };
    let format = Format::from_name(name, src.as_deref()).map_err(anyhow::Error::msg)?;
    let Some(t) = template else {
        anyhow::bail!("--tool-call-parser: this model has no chat template to call tools through");
    };
    Ok(Some(t.with_tool_format(format)))
}

/// The GGUF's chat template, else its architecture's known format.
pub(crate) fn chat_template(file: &GgufFile) -> Result<Option<ChatTemplate>> {
    let text = |key: &str| match file.get(key) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let arch = text("general.architecture").unwrap_or_default();
    ChatTemplate::choose(text("tokenizer.chat_template"), &arch).map_err(anyhow::Error::msg)
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
