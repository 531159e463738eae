//! `everett collapse` as a user runs it, on a tiny synthetic model written to a temp file: the
//! JSON record (same tokens and logprobs as `everett generate --json`, one accepted count and
//! one entropy curve per pass), the terminal summary, clear errors for bad flags, and the HTML
//! page loaded in headless Chromium (its script runs without errors and draws every pass).
//! The Chromium check is skipped when no browser is installed, unless EVERETT_REQUIRE_CHROMIUM
//! is set (CI installs `chromium` and sets it).

mod common;

use common::{everett, refused, workdir};
use everett_engine::testutil::{page_dom, Tiny};
use serde_json::Value;
use std::path::{Path, PathBuf};

const PROMPT: &str = "a b c a b c a b c a b";

fn ok_json(args: &[&str]) -> Value {
    let out = everett(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `everett CMD PROMPT --model M --max-tokens N --json`, parsed.
fn run_json(cmd: &str, m: &str, n: &str) -> Value {
    ok_json(&[cmd, PROMPT, "--model", m, "--max-tokens", n, "--json"])
}

fn tiny_file(dir: &Path) -> PathBuf {
    common::tiny_file(dir, &Tiny::gemma3())
}

#[test]
fn json_has_the_documented_schema_and_greedy_tokens() {
    let dir = workdir("collapse", "json");
    let model = tiny_file(&dir);
    let m = model.to_str().unwrap();
    let c = run_json("collapse", m, "40");
    let g = run_json("generate", m, "40");
    for key in [
        "prompt_token_ids",
        "tokens",
        "text",
        "finish_reason",
        "forward_passes",
        "accepted_per_pass",
        "tokens_per_pass",
        "entropy_curves",
        "wall_ms",
    ] {
        assert!(!c[key].is_null(), "missing {key}: {c}");
    }
    assert_eq!(c["prompt_token_ids"], g["prompt_token_ids"]);
    assert_eq!(c["text"], g["text"]);
    assert_eq!(c["finish_reason"], g["finish_reason"]);
    let pick = |v: &Value| -> Vec<(u64, f64)> {
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["id"].as_u64().unwrap(), t["logprob"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(pick(&c), pick(&g));
    let passes = c["forward_passes"].as_u64().unwrap() as usize;
    let accepted: Vec<u64> = c["accepted_per_pass"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_u64().unwrap())
        .collect();
    assert_eq!(accepted.len(), passes);
    assert!(accepted.iter().all(|&a| a >= 1));
    assert!(accepted.iter().sum::<u64>() >= pick(&c).len() as u64);
    let curves = c["entropy_curves"].as_array().unwrap();
    assert_eq!(curves.len(), passes);
    let tpp = c["tokens_per_pass"].as_f64().unwrap();
    assert!((tpp - pick(&c).len() as f64 / passes as f64).abs() < 1e-9);
}

#[test]
fn the_terminal_shows_the_text_then_one_line_per_pass() {
    let dir = workdir("collapse", "term");
    let model = tiny_file(&dir);
    let m = model.to_str().unwrap();
    let c = run_json("collapse", m, "30");
    let out = everett(&["collapse", PROMPT, "--model", m, "--max-tokens", "30"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(c["text"].as_str().unwrap()), "{text}");
    let lines = text.lines().filter(|l| l.starts_with("pass ")).count();
    assert_eq!(lines as u64, c["forward_passes"].as_u64().unwrap());
    assert!(text.contains("tokens/pass"), "{text}");
}

#[test]
fn bad_flags_get_clear_errors() {
    let dir = workdir("collapse", "bad");
    let model = tiny_file(&dir);
    let m = model.to_str().unwrap();
    for (flags, says) in [
        (vec!["--window", "0"], "window"),
        (vec!["--window", "99"], "window"),
        (vec!["--ngram", "1"], "ngram"),
        (vec!["--candidates", "0"], "candidates"),
        (vec!["--max-tokens", "0"], "max-tokens"),
        (vec!["--mode", "magic"], "mode"),
        (vec!["--temperature", "0.8"], "greedy only"),
    ] {
        let mut args = vec!["collapse", "a b", "--model", m];
        args.extend(flags);
        refused(&args, says);
    }
}

#[test]
fn html_page_loads_offline_and_draws_every_pass() {
    let dir = workdir("collapse", "html");
    let model = tiny_file(&dir);
    let html = dir.join("collapse.html");
    let out = everett(&[
        "collapse",
        "a <b> & </script> c a b c",
        "--model",
        model.to_str().unwrap(),
        "--max-tokens",
        "32",
        "--json",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let Some(dom) = page_dom(&html) else { return };
    let passes = run["forward_passes"].as_u64().unwrap();
    assert!(
        dom.contains("data-state=\"ok\""),
        "page script failed: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(dom.contains(&format!("data-passes=\"{passes}\"")));
    assert_eq!(dom.matches("class=\"pass\"").count() as u64, passes);
    let window_cells: usize = run["entropy_curves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_array().unwrap().len())
        .sum();
    let drawn =
        dom.matches("class=\"cell kept\"").count() + dom.matches("class=\"cell lost\"").count();
    assert_eq!(drawn, window_cells);
    assert!(dom.contains("<svg"), "no entropy chart");
}
