//! `everett chat`: an interactive chat in the terminal over the same chat template as the
//! server (the GGUF's, else the architecture's known format). The history is kept and sent
//! whole each turn; `/reset` clears it, `/exit` or end of input quits. Ctrl-C while the model
//! answers stops that answer (the request is aborted and its KV freed) and keeps the program;
//! the partial answer stays in the history.

use crate::commands::{load_from, open};
use crate::serve::chat_template;
use crate::Common;
use anyhow::{bail, Result};
use clap::Args;
use everett_engine::engine::handle::spawn;
use everett_engine::engine::{Engine, EngineConfig, Event, Task};
use everett_engine::generate::Request;
use everett_engine::sample::SamplingParams;
use std::io::{BufRead, Write};
use tokio::sync::mpsc;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    common: Common,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What an answer does when the conversation reaches the end of the context.
    #[command(flatten)]
    overflow: crate::overflow::OverflowArgs,
}

pub fn run(a: &ChatArgs) -> Result<()> {
    let file = open(&a.common)?;
    let Some(template) = chat_template(&file)? else {
        bail!("this model has no chat template and no known chat format; use `everett generate`");
    };
    let (model, tok) = load_from(&a.common, &file)?;
    let overflow = a.overflow.overflow()?;
    let cfg = EngineConfig::default();
    a.overflow.check(&model, cfg.kv_tokens)?;
    drop(file);
    let tok = std::sync::Arc::new(tok);
    let (engine, thread) = spawn(Engine::new(model, tok.clone(), cfg));
    // Lines from stdin arrive on a channel, so waiting for one can be interrupted.
    let (line_tx, mut lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut history: Vec<(String, String)> = Vec::new();
    let system = a.system.iter().map(|s| ("system".to_string(), s.clone()));
    eprintln!("everett chat: /reset clears the history, /exit quits, Ctrl-C stops an answer");
    let mut turn = 0u64;
    rt.block_on(async {
        loop {
            print!("> ");
            std::io::stdout().flush()?;
            let line = tokio::select! {
                l = lines.recv() => l,
                _ = tokio::signal::ctrl_c() => {
                    println!("\n(/exit or Ctrl-D quits)");
                    continue;
                }
            };
            let Some(line) = line else { break };
            match line.trim() {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    history.clear();
                    println!("(history cleared)");
                    continue;
                }
                _ => {}
            }
            history.push(("user".into(), line));
            let msgs: Vec<_> = system.clone().chain(history.iter().cloned()).collect();
            let ids = match template.prompt_ids(&tok, &msgs) {
                Ok(ids) => ids,
                Err(e) => {
                    println!("error: {e}");
                    history.pop();
                    continue;
                }
            };
            let sampling = SamplingParams {
                temperature: a.temperature,
                top_p: a.top_p,
                seed: a.seed.wrapping_add(turn),
                ..Default::default()
            };
            turn += 1;
            let req = Request {
                overflow,
                ..Request::new(ids, sampling, a.max_tokens)
            };
            let (_, mut events) = engine.submit(Task::Generate(req));
            let mut answer = String::new();
            loop {
                tokio::select! {
                    e = events.recv() => match e {
                        Some(Event::Token { token, .. }) => {
                            print!("{}", token.text);
                            std::io::stdout().flush()?;
                            answer.push_str(&token.text);
                        }
                        Some(Event::Error(e)) => {
                            println!("\nerror: {e} (/reset starts over)");
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => {
                        // Dropping the stream cancels the request.
                        print!(" [stopped]");
                        break;
                    }
                }
            }
            drop(events);
            println!();
            if answer.is_empty() {
                history.pop();
            } else {
                history.push(("assistant".into(), answer));
            }
        }
        anyhow::Ok(())
    })?;
    engine.shutdown(std::time::Duration::from_secs(1));
    let _ = thread.join();
    Ok(())
}
