//! Output into a closed pipe (`everett inspect FILE | head`) ends the program quietly with status
//! 0 — no panic message.

mod common;

use common::{tiny_file, workdir};
use everett_engine::testutil::Tiny;
use std::process::{Command, Stdio};

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = workdir("pipe", "inspect");
    let model = tiny_file(&dir, &Tiny::llama());
    let mut child = Command::new(env!("CARGO_BIN_EXE_everett"))
        .args(["inspect", model.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the program writes (it first reads the model file).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}
