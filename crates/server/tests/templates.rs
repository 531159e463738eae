//! llama.cpp's real chat templates (`models/templates/*.jinja`, cached by `tools/vocab/fetch.sh`)
//! rendered by everett's template path must give exactly what Python's `jinja2` gives with
//! transformers' conventions, for the conversations in `tools/templates/conversations.json`;
//! `tools/templates/render_reference.py` wrote `reference.json`. A template that jinja2 cannot
//! compile is left out, as the issue says; one that raises for a conversation must raise here
//! too. `strftime_now` reads the same fixed clock as the reference (2026-01-15 09:30:00).

use everett_engine::testutil::vocab_dir;
use everett_server::template::Template;
use minijinja::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/templates");

/// Renderings known to differ from jinja2, with why (each is reported, not hidden).
const KNOWN: [(&str, &str, &str); 0] = [];

fn clock() -> i64 {
    1_768_469_400
}

#[test]
fn every_jinja2_compilable_template_renders_as_jinja2_does() {
    let Some(dir) = vocab_dir() else { return };
    let read = |p: &str| std::fs::read_to_string(format!("{ROOT}/{p}")).unwrap();
    // minijinja maps keep the file's key order (as Python dicts do; serde_json's would sort).
    let convs: Value = serde_json::from_str(&read("conversations.json")).unwrap();
    let reference: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&read("reference.json")).unwrap();
    let (mut ok, mut total, mut failures) = (0, 0, Vec::new());
    for (name, results) in &reference {
        if results.get("compile_error").is_some() {
            continue;
        }
        let src = std::fs::read_to_string(dir.join("templates").join(name)).unwrap();
        let t = match Template::with_clock(src, clock) {
            Ok(t) => t,
            Err(e) => {
                total += results.as_object().unwrap().len();
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        for (conv, want) in results.as_object().unwrap() {
            total += 1;
            if let Some(k) = KNOWN.iter().find(|k| k.0 == name && k.1 == conv) {
                eprintln!("known difference, not compared: {name} / {conv}: {}", k.2);
                continue;
            }
            let body = convs.get_attr(conv).unwrap();
            let mut pairs: Vec<(Value, Value)> = body
                .try_iter()
                .unwrap()
                .map(|k| (k.clone(), body.get_item(&k).unwrap()))
                .collect();
            pairs.push(("bos_token".into(), "<s>".into()));
            pairs.push(("eos_token".into(), "</s>".into()));
            let vars = Value::from_iter(pairs);
            let got = t.render(vars);
            match (want.get("text").and_then(|v| v.as_str()), got) {
                (Some(w), Ok(g)) if w == g => ok += 1,
                (None, Err(_)) => ok += 1,
                (Some(w), Ok(g)) => {
                    let at = w.chars().zip(g.chars()).take_while(|(a, b)| a == b).count();
                    let ctx = |s: &str| {
                        s.chars()
                            .skip(at.saturating_sub(20))
                            .take(60)
                            .collect::<String>()
                    };
                    failures.push(format!(
                        "{name} / {conv}: differs at char {at}: jinja2 {:?} everett {:?}",
                        ctx(w),
                        ctx(&g)
                    ));
                }
                (Some(_), Err(e)) => failures.push(format!("{name} / {conv}: {e}")),
                (None, Ok(_)) => failures.push(format!(
                    "{name} / {conv}: jinja2 raised ({}), everett rendered",
                    want["error"]
                )),
            }
        }
    }
    eprintln!(
        "{ok} of {total} renderings match jinja2 ({} known differences)\n{}",
        KNOWN.len(),
        failures.join("\n")
    );
    assert!(total >= 190, "the reference holds {total} renderings");
    assert!(failures.is_empty(), "{} renderings differ", failures.len());
}
