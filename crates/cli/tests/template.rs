//! `everett template` prints exactly what Python's jinja2 renders (the reference of
//! `tools/templates/`), with no newline added; bad variables and templates are refused by name.

mod common;

use common::{everett, refused, workdir};
use everett_engine::testutil::vocab_dir;

#[test]
fn prints_the_rendered_template_exactly() {
    let Some(dir) = vocab_dir() else { return };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/templates");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/reference.json")).unwrap())
            .unwrap();
    let convs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/conversations.json")).unwrap(),
    )
    .unwrap();
    let work = workdir("template", "exact");
    let name = "Qwen-Qwen2.5-7B-Instruct.jinja";
    let mut vars = convs["chat"].clone();
    vars["bos_token"] = "<s>".into();
    vars["eos_token"] = "</s>".into();
    let vars_path = work.join("vars.json");
    std::fs::write(&vars_path, vars.to_string()).unwrap();
    let tpl = dir.join("templates").join(name);
    let out = everett(&[
        "template",
        "--template",
        tpl.to_str().unwrap(),
        "--vars",
        vars_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        reference[name]["chat"]["text"].as_str().unwrap()
    );
    // Variables that are not an object, and a template that does not compile.
    let bad = work.join("bad.json");
    std::fs::write(&bad, "[1, 2]").unwrap();
    refused(
        &[
            "template",
            "--template",
            tpl.to_str().unwrap(),
            "--vars",
            bad.to_str().unwrap(),
        ],
        "JSON object",
    );
    let broken = work.join("broken.jinja");
    std::fs::write(&broken, "{% for m in %}").unwrap();
    refused(
        &[
            "template",
            "--template",
            broken.to_str().unwrap(),
            "--vars",
            vars_path.to_str().unwrap(),
        ],
        "does not compile",
    );
}
