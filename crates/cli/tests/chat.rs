//! `everett chat` as a process with the default model (skipped without it, unless
//! EVERETT_REQUIRE_MODEL is set): turns, `/reset`, Ctrl-C stopping an answer but not the
//! program, and a model without any chat format refused with a clear error.

use everett_engine::testutil::{default_model, tiny_model, Tiny};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Waits until `out` satisfies `done`, up to a minute.
fn wait_for(out: &Mutex<String>, what: &str, done: impl Fn(&str) -> bool) {
    let start = Instant::now();
    while !done(&out.lock().unwrap()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; output so far: {}",
            out.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn turns_reset_and_ctrl_c_stops_only_the_answer() {
    let Some(model) = default_model() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_everett"))
        .args([
            "chat",
            "--max-tokens",
            "400",
            "--temperature",
            "0",
            "--model",
        ])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    wait_for(&out, "the first prompt", |o| o.starts_with("> "));
    writeln!(stdin, "Tell me a very long story about a dragon.").unwrap();
    // Some of the answer, then Ctrl-C.
    wait_for(&out, "the answer to start", |o| o.len() > 40);
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for(&out, "the stop", |o| o.contains(" [stopped]\n> "));
    // Still alive: a reset and another turn, then end of input quits cleanly.
    writeln!(stdin, "/reset").unwrap();
    wait_for(&out, "the reset", |o| o.contains("(history cleared)"));
    writeln!(stdin, "Hello").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "chat exited with {status}");
    let out = out.lock().unwrap();
    let after_reset = out.split("(history cleared)").nth(1).unwrap();
    // Input is not echoed: between the prompts after the reset lies the second answer.
    let answer = after_reset
        .trim()
        .trim_start_matches('>')
        .trim_end_matches('>');
    assert!(
        !answer.trim().is_empty(),
        "no answer after the reset: {out}"
    );
}

#[test]
fn a_model_without_a_chat_format_is_refused() {
    let dir = std::env::temp_dir().join(format!("everett-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_model(&Tiny::llama(), 3)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_everett"))
        .args(["chat", "--model"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no chat template"), "{err}");
}
