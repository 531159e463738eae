//! `everett serve` as a process on loopback with the default model (skipped without it, unless
//! EVERETT_REQUIRE_MODEL is set): real clients through `tools/e2e/serve_e2e.py` (the official
//! `openai` package, 64 concurrent streaming clients, greedy identity with `everett generate`,
//! the page in headless Chromium), and SIGTERM letting an in-flight stream finish before the
//! process exits 0. The Python checks need EVERETT_E2E_PYTHON, an interpreter with `openai` and
//! `websocket-client` (`.ci/run` makes that virtualenv); without it they are skipped, unless
//! EVERETT_REQUIRE_E2E is set.

use everett_engine::testutil::{chromium, default_model, e2e_python, tiny_model, vocab_dir, Tiny};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server and its address.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts `everett serve --port 0` and waits for its "ready" line.
    fn start(model: &Path) -> Server {
        Self::start_with(model, &[])
    }

    /// `start` with more flags.
    fn start_with(model: &Path, flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_everett"))
            .args(["serve", "--port", "0", "--model"])
            .arg(model)
            .args(flags)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve exited before it was ready")
                .unwrap();
            if let Some(rest) = line.split(" ready on http://").nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, addr }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits up to `limit` for the process to exit; its status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "serve did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn real_clients_load_greedy_identity_and_the_page() {
    let Some(model) = default_model() else { return };
    let Some(python) = e2e_python() else { return };
    let server = Server::start(&model);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/e2e/serve_e2e.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--url", &format!("http://{}", server.addr)])
        .args(["--everett", env!("CARGO_BIN_EXE_everett")])
        .arg("--model")
        .arg(&model);
    if let Some(c) = chromium() {
        cmd.args(["--chromium", c]);
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    assert!(
        out.status.success(),
        "end-to-end checks failed:\n{stdout}\n{stderr}"
    );
}

/// Tool calls in each format through the official client: the default model served with the
/// chat templates of Qwen 2.5 (Hermes `<tool_call>`), Llama 3.1 (JSON), Mistral Nemo
/// (`[TOOL_CALLS][…]`) and Mistral Small 3.2 (`[TOOL_CALLS]name[ARGS]{…}`), from llama.cpp's
/// templates. The model was not trained on these formats: the grammar of `required` and named
/// calls is what makes every call parse.
#[test]
fn tool_calls_in_each_format_through_the_openai_client() {
    let Some(model) = default_model() else { return };
    let Some(python) = e2e_python() else { return };
    let Some(vocab) = vocab_dir() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/e2e/serve_e2e.py");
    for (template, parser) in [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes"),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3_json"),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral"),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral"),
    ] {
        let path = vocab.join("templates").join(template);
        let path = path.to_str().unwrap();
        // The format read from the template; for one, also named by the flag.
        let mut runs = vec![vec!["--chat-template", path]];
        if parser == "mistral" && template.contains("Nemo") {
            runs.push(vec!["--chat-template", path, "--tool-call-parser", parser]);
        }
        for flags in runs {
            let server = Server::start_with(&model, &flags);
            let out = Command::new(&python)
                .arg(&script)
                .args([
                    "--url",
                    &format!("http://{}", server.addr),
                    "--tools-only",
                    "--seeds",
                    "3",
                ])
                .output()
                .unwrap();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            println!("{template} {flags:?}: {stdout}");
            assert!(
                out.status.success(),
                "{template} {flags:?}:\n{stdout}\n{stderr}"
            );
        }
    }
}

#[test]
fn sigterm_lets_an_open_stream_finish_then_exits_0() {
    let Some(model) = default_model() else { return };
    let mut server = Server::start(&model);
    let body = r#"{"prompt": "Tell me a long story.", "max_tokens": 96, "temperature": 0,
                   "ignore_eos": true, "stream": true}"#;
    let mut conn = TcpStream::connect(&server.addr).unwrap();
    write!(
        conn,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Once the first chunk is here the request is in flight.
    let mut first = [0u8; 256];
    let n = conn.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    server.signal("-TERM");
    let mut rest = String::new();
    conn.read_to_string(&mut rest).unwrap();
    let chunks = rest.matches("\"text\":").count();
    assert!(rest.contains("data: [DONE]"), "the stream was cut: {rest}");
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(chunks >= 90, "only {chunks} chunks after SIGTERM");
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn bench_serve_measures_a_live_server() {
    let dir = std::env::temp_dir().join(format!("everett-serve-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, tiny_model(&Tiny::llama(), 3)).unwrap();
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "hello there\n{\"prompt\": \"a b c\"}\n").unwrap();
    let server = Server::start(&model);
    let out = Command::new(env!("CARGO_BIN_EXE_everett"))
        .args([
            "bench",
            "serve",
            "--url",
            &format!("http://{}", server.addr),
        ])
        .args(["--requests", "6", "--concurrency", "3", "--max-tokens", "5"])
        .arg("--prompts")
        .arg(&prompts)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["successful"], 6, "{r}");
    assert_eq!(r["failed"], 0);
    assert_eq!(r["output_tokens"], 30);
    assert_eq!(r["model"], "tiny");
    for key in ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"] {
        let s = &r[key];
        let (p50, p99) = (s["p50"].as_f64().unwrap(), s["p99"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{key}: {s}");
    }
    // Absurd sizes and a port nothing listens on any more: clear errors, not panics.
    let out = Command::new(env!("CARGO_BIN_EXE_everett"))
        .args(["bench", "serve", "--url", "127.0.0.1:9"])
        .args(["--requests", "18446744073709551615"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("at most"), "{err}");
    drop(server);
    let out = Command::new(env!("CARGO_BIN_EXE_everett"))
        .args([
            "bench",
            "serve",
            "--url",
            "http://127.0.0.1:9",
            "--requests",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach"),
        "{err}"
    );
}

/// The soak's short version: mixed load (streams, n > 1, lookahead, explorations, dropped
/// clients, malformed requests, bursts over --max-waiting) for 40 s, then no 5xx, every malformed
/// request a 4xx, the metrics settled (nothing running or waiting, no KV block held), a small
/// request answered beside a 256-prompt one and the 32 768-sequence one refused by its numbers.
/// The ten-minute run with its timing and memory checks is a benchmark (BENCHMARKS.md).
#[test]
fn a_short_soak_of_mixed_load_settles_with_no_server_errors() {
    let Some(model) = default_model() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/soak/soak.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--everett", env!("CARGO_BIN_EXE_everett"), "--model"])
        .arg(&model)
        .args(["--duration", "40", "--workers", "6", "--functional"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "soak failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
