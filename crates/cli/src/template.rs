//! `everett template`: renders a chat template (a file, or a GGUF's `tokenizer.chat_template`)
//! with the variables of a JSON file — `messages`, optional `tools`, `add_generation_prompt`,
//! `bos_token`, `eos_token` and any others — and prints exactly the text, with no newline added:
//! the same renderer the server uses, so what this prints is what a chat request's prompt is.

use anyhow::{bail, Context, Result};
use everett_engine::gguf::{GgufFile, Value as Meta};
use everett_engine::tokenizer::Tokenizer;
use everett_server::template::Template;
use minijinja::Value;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct TemplateArgs {
    /// A Jinja template file.
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    template: Option<PathBuf>,
    /// A GGUF file whose `tokenizer.chat_template` to render (its BOS and EOS texts fill
    /// `bos_token` and `eos_token` unless the variables set them).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The variables, a JSON object.
    #[arg(long)]
    vars: PathBuf,
}

pub fn run(a: &TemplateArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.vars)
        .with_context(|| format!("cannot read {}", a.vars.display()))?;
    // minijinja maps keep the file's key order, as Python dicts do.
    let vars: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", a.vars.display()))?;
    if vars.kind() != minijinja::value::ValueKind::Map {
        bail!(
            "{} must hold a JSON object of template variables",
            a.vars.display()
        );
    }
    let mut pairs: Vec<(Value, Value)> = vars
        .try_iter()?
        .map(|k| {
            let v = vars.get_item(&k).unwrap_or_default();
            (k, v)
        })
        .collect();
    let src = match (&a.template, &a.model) {
        (Some(p), _) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        (None, Some(p)) => {
            let f = GgufFile::open(p)?;
            let Some(Meta::Str(src)) = f.get("tokenizer.chat_template") else {
                bail!("{} has no tokenizer.chat_template", p.display());
            };
            let tok = Tokenizer::from_gguf(&f)?;
            for (key, id) in [("bos_token", tok.bos), ("eos_token", tok.eos)] {
                if vars.get_attr(key).is_ok_and(|v| v.is_undefined()) {
                    let text = id.map(|i| tok.piece(i).to_string()).unwrap_or_default();
                    pairs.push((key.into(), text.into()));
                }
            }
            src.clone()
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let t = Template::new(src).map_err(anyhow::Error::msg)?;
    let out = t
        .render(Value::from_iter(pairs))
        .map_err(anyhow::Error::msg)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
