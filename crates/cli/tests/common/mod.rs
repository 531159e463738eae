//! What the command-line tests share: a scratch directory per test, a tiny model written to
//! it, running the `everett` binary, and the check that a bad flag is refused clearly.
#![allow(dead_code)] // each suite uses some of these helpers

use everett_engine::testutil::{tiny_model, Tiny};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh directory for test `name` of the suite `suite`, unique to this process.
pub fn workdir(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("everett-{suite}-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `shape`'s tiny model written into `dir`.
pub fn tiny_file(dir: &Path, shape: &Tiny) -> PathBuf {
    let p = dir.join("tiny.gguf");
    std::fs::write(&p, tiny_model(shape, 3)).unwrap();
    p
}

/// Runs the binary with `args`.
pub fn everett(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_everett"))
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that `args` fail with a message containing `says`, and without a panic.
pub fn refused(args: &[&str], says: &str) {
    let out = everett(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(err.contains(says), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
