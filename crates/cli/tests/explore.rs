//! `everett explore` as a user runs it, on a tiny synthetic model written to a temp file: the
//! JSON schema, determinism, clear errors for bad flags, and the HTML page loaded in headless
//! Chromium (it must run its script without errors and show every node of the JSON).
//! The Chromium check is skipped when no browser is installed, unless EVERETT_REQUIRE_CHROMIUM
//! is set (CI installs `chromium` and sets it).

mod common;

use common::{everett, refused, workdir};
use everett_engine::testutil::{page_dom, Tiny};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn explore_json(model: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "explore",
        "a b c",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "-",
    ];
    args.extend(extra);
    let out = everett(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tiny_file(dir: &Path) -> PathBuf {
    common::tiny_file(dir, &Tiny::llama())
}

#[test]
fn json_has_the_documented_schema_and_is_deterministic() {
    let dir = workdir("explore", "json");
    let model = tiny_file(&dir);
    let flags = [
        "--branches",
        "3",
        "--width",
        "5",
        "--steps",
        "4",
        "--seed",
        "9",
        "--stochastic",
    ];
    let mut a = explore_json(&model, &flags);
    let mut b = explore_json(&model, &flags);
    for key in [
        "prompt",
        "prompt_token_ids",
        "params",
        "nodes",
        "paths",
        "bifurcations",
        "verdict",
        "stats",
    ] {
        assert!(a.get(key).is_some(), "missing {key}");
    }
    for key in [
        "id",
        "parent",
        "token_id",
        "text",
        "logprob",
        "score",
        "depth",
        "entropy",
        "varentropy",
        "status",
    ] {
        assert!(a["nodes"][1].get(key).is_some(), "node lacks {key}");
    }
    for key in ["node", "text", "score", "normalized_score"] {
        assert!(a["paths"][0].get(key).is_some(), "path lacks {key}");
    }
    for key in [
        "forward_passes",
        "kv_blocks_used",
        "kv_blocks_unshared",
        "wall_ms",
    ] {
        assert!(a["stats"][key].is_number(), "stats lack {key}");
    }
    // The prompt, then one pass per level whose children still need logits.
    assert_eq!(a["stats"]["forward_passes"], 4);
    a["stats"]["wall_ms"] = 0.into();
    b["stats"]["wall_ms"] = 0.into();
    assert_eq!(a, b);
}

#[test]
fn bad_flags_get_clear_errors() {
    let dir = workdir("explore", "bad");
    let model = tiny_file(&dir);
    let m = model.to_str().unwrap();
    for (flags, needle) in [
        (vec!["--width", "0"], "width"),
        (vec!["--branches", "1000"], "branches"),
        (vec!["--temperature", "-1"], "temperature"),
        (vec!["--measure", "mean"], "--measure"),
        (vec!["--min-p", "3"], "min_p"),
        (vec!["--kv-type", "f8"], "expected f16, f32, q8_0 or q4_0"),
    ] {
        let mut args = vec!["explore", "hi", "--model", m];
        args.extend(&flags);
        refused(&args, needle);
    }
}

#[test]
fn html_page_loads_offline_and_shows_every_node() {
    let dir = workdir("explore", "html");
    let model = tiny_file(&dir);
    let html = dir.join("tree.html");
    let json = dir.join("tree.json");
    let out = everett(&[
        "explore",
        "a <b> & </script> c",
        "--model",
        model.to_str().unwrap(),
        "--branches",
        "3",
        "--width",
        "6",
        "--steps",
        "5",
        "--html",
        html.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let Some(dom) = page_dom(&html) else { return };
    let nodes = tree["nodes"].as_array().unwrap().len();
    assert!(
        dom.contains("data-state=\"ok\""),
        "page script failed: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(
        dom.contains(&format!("data-nodes=\"{nodes}\"")),
        "node count differs from JSON ({nodes})"
    );
    assert_eq!(dom.matches("class=\"node ").count(), nodes);
    assert!(dom.contains("<svg"), "no entropy chart");
}

#[test]
fn bench_explore_prints_the_documented_object() {
    let dir = workdir("explore", "bench");
    let model = tiny_file(&dir);
    let out = everett(&[
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--only",
        "explore",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["explore"];
    for key in [
        "ratio_vs_generate",
        "ratio_no_share",
        "forward_passes",
        "kv_blocks_used",
        "kv_blocks_unshared",
    ] {
        assert!(
            e[key].as_f64().is_some_and(|x| x > 0.0),
            "explore.{key} missing or not positive: {v}"
        );
    }
    assert!(e["kv_blocks_used"].as_f64() <= e["kv_blocks_unshared"].as_f64());
}
