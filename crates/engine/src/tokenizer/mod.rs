//! Tokenizer built from the GGUF vocabulary, as llama.cpp builds it: SentencePiece-BPE (`llama`
//! model: Gemma 3, Llama 2, Phi-3), BPE over a pre-tokenizer's words (`gpt2` model: GPT-2,
//! Llama 3, Qwen, Falcon, DeepSeek, …, byte-level; `gemma4`: raw UTF-8 with byte fallback) and
//! WordPiece (`bert`). Special and user-defined tokens are cut out of the text first (longest
//! first), the rest is encoded by the model. Decoding gives bytes; `stream::Detokenizer` turns a
//! token stream into valid UTF-8 text.

mod bpe;
mod pretok;
mod spm;
pub mod stream;
mod wpm;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use bpe::Bpe;
use pretok::PreTokenizer;
use wpm::Wpm;

/// Token text → id (a fast hasher: the keys are the model's, fixed at load).
pub(crate) type Vocab = rustc_hash::FxHashMap<String, u32>;

/// How text between special tokens becomes ids.
enum Model {
    /// `by_words`: merges never cross a word start (see `spm::words_are_independent`).
    Spm {
        by_words: bool,
    },
    Bpe {
        bpe: Box<Bpe>,
        pre: PreTokenizer,
        /// Spaces become `▁` before splitting (Gemma 4).
        escape_spaces: bool,
    },
    Wpm(Wpm),
}

/// GGUF token types.
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// A token matched verbatim in text before the model runs.
struct Special {
    text: String,
    id: u32,
    /// Control and unknown tokens are matched only when special text is parsed.
    control: bool,
    /// Whitespace after the token is swallowed (Phi-3's special tokens).
    rstrip: bool,
}

pub struct Tokenizer {
    model: Model,
    /// `tokenizer.ggml.model` and the pre-tokenizer in use, for display.
    pub model_name: String,
    pub pre_name: String,
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: Vocab,
    byte_ids: [Option<u32>; 256],
    /// Longest first.
    specials: Vec<Special>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End-of-generation tokens (eos, Gemma's `<end_of_turn>`, …).
    pub eog: Vec<u32>,
    unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    add_space_prefix: bool,
}

fn token_id(f: &GgufFile, key: &str, n: usize) -> Result<Option<u32>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < n => Ok(Some(id as u32)),
            _ => Err(Error::meta(
                key,
                format!("{} is not a token id below {n}", v.summary()),
            )),
        },
    }
}

/// The pre-tokenizers of the Llama 3 family.
fn llama3_like(pre: &str) -> bool {
    matches!(
        pre,
        "llama3"
            | "llama-v3"
            | "llama-bpe"
            | "falcon3"
            | "falcon-h1"
            | "pixtral"
            | "midm-2.0"
            | "lfm2"
            | "jina-v5-nano"
    )
}

/// Pre-tokenizers whose words are looked up whole before merging (llama.cpp's list).
fn ignores_merges(pre: &str) -> bool {
    llama3_like(pre)
        || matches!(
            pre,
            "minicpm5" | "youtu" | "glm4" | "glm5" | "tekken" | "granite-embed-multi-97m"
        )
}

/// BPE pre-tokenizers whose models put BOS first unless the file says otherwise.
fn bpe_adds_bos(pre: &str) -> bool {
    llama3_like(pre) || matches!(pre, "tekken" | "chameleon")
}

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model_name = f.get_str("tokenizer.ggml.model")?.to_string();
        let pre_name = match (model_name.as_str(), f.get("tokenizer.ggml.pre")) {
            ("gemma4", _) => "gemma4".to_string(),
            ("gpt2", Some(Value::Str(p))) => p.clone(),
            ("gpt2", _) => "default".to_string(),
            (_, Some(Value::Str(p))) => p.clone(),
            _ => String::new(),
        };
        let pieces: Vec<String> = f
            .get_array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(Error::meta("tokenizer.ggml.tokens", "holds a non-string")),
            })
            .collect::<Result<_>>()?;
        let n = pieces.len();
        let num_array = |key: &str| -> Result<Option<Vec<f64>>> {
            let Some(Value::Array(a)) = f.get(key) else {
                return Ok(None);
            };
            if a.len() != n {
                return Err(Error::meta(
                    key,
                    format!("has {} entries for {n} tokens", a.len()),
                ));
            }
            a.iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| Error::meta(key, "holds a non-number"))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        };
        let scores = num_array("tokenizer.ggml.scores")?
            .map_or(vec![0.0; n], |v| v.into_iter().map(|x| x as f32).collect());
        let types = num_array("tokenizer.ggml.token_type")?
            .map_or(vec![1; n], |v| v.into_iter().map(|x| x as i32).collect());
        let mut ids = Vocab::default();
        ids.reserve(n);
        for (i, p) in pieces.iter().enumerate() {
            ids.entry(p.clone()).or_insert(i as u32);
        }
        let mut byte_ids = [None; 256];
        for (i, p) in pieces.iter().enumerate() {
            if types[i] == TYPE_BYTE && p.len() == 6 && p.starts_with("<0x") {
                if let Ok(b) = u8::from_str_radix(&p[3..5], 16) {
                    byte_ids[b as usize] = Some(i as u32);
                }
            }
        }
        let bpe_model = |byte_encode: bool, ignore_merges: bool| -> Result<Box<Bpe>> {
            let Some(Value::Array(a)) = f.get("tokenizer.ggml.merges") else {
                return Err(Error::meta(
                    "tokenizer.ggml.merges",
                    format!("missing (needed by the {model_name} tokenizer)"),
                ));
            };
            let merges: Vec<&str> = a
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect();
            Ok(Box::new(Bpe::new(
                &merges,
                &ids,
                byte_encode,
                ignore_merges,
            )))
        };
        let unsupported = || {
            Error::Tokenizer(format!(
                "tokenizer model `{model_name}` (tokenizer.ggml.model, pre-tokenizer `{pre_name}`) \
                 is not supported: everett reads llama (SentencePiece BPE), gpt2 (BPE), gemma4 and bert (WordPiece)"
            ))
        };
        let (model, add_bos_default, add_space_default) = match model_name.as_str() {
            "llama" => {
                let by_words = spm::words_are_independent(pieces.iter());
                (Model::Spm { by_words }, true, true)
            }
            "gpt2" | "gemma4" => {
                let pre = PreTokenizer::new(&pre_name)?;
                let raw = matches!(
                    pre_name.as_str(),
                    "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" | "whitespace"
                );
                let escape_spaces = raw && pre_name != "whitespace";
                let bpe = bpe_model(!raw, ignores_merges(&pre_name))?;
                let add_bos = bpe_adds_bos(&pre_name);
                let model = Model::Bpe {
                    bpe,
                    pre,
                    escape_spaces,
                };
                (model, add_bos, false)
            }
            "bert" => {
                let lowercase = f
                    .get_bool("tokenizer.ggml.normalizer.lowercase")
                    .unwrap_or(true);
                let wpm = Wpm {
                    lowercase,
                    strip_accents: f
                        .get_bool("tokenizer.ggml.normalizer.strip_accents")
                        .unwrap_or(lowercase),
                    max_token_len: pieces.iter().map(String::len).max().unwrap_or(0),
                    unk: token_id(f, "tokenizer.ggml.unknown_token_id", n)?
                        .or_else(|| ids.get("[UNK]").copied()),
                };
                (Model::Wpm(wpm), true, false)
            }
            _ => return Err(unsupported()),
        };
        // Phi-3's special tokens swallow the whitespace after them (llama.cpp keys this on
        // the model's name).
        let name = f
            .get("general.name")
            .and_then(|v| match v {
                Value::Str(s) => Some(s.to_lowercase()),
                _ => None,
            })
            .unwrap_or_default();
        let phi3 = name.contains("phi-3") || name.contains("phi3");
        let mut specials: Vec<Special> = (0..n)
            .filter(|&i| {
                matches!(types[i], TYPE_CONTROL | TYPE_USER_DEFINED | TYPE_UNKNOWN)
                    && !pieces[i].is_empty()
            })
            .map(|i| {
                let text = pieces[i].clone();
                let rstrip = phi3 && !matches!(text.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
                Special {
                    control: types[i] != TYPE_USER_DEFINED,
                    rstrip,
                    text,
                    id: i as u32,
                }
            })
            .collect();
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        let bos = token_id(f, "tokenizer.ggml.bos_token_id", n)?;
        let eos = token_id(f, "tokenizer.ggml.eos_token_id", n)?;
        let mut eog: Vec<u32> = eos.into_iter().collect();
        eog.extend(token_id(f, "tokenizer.ggml.eot_token_id", n)?);
        for name in ["<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>"] {
            if let Some(&id) = ids.get(name) {
                if types[id as usize] == TYPE_CONTROL && !eog.contains(&id) {
                    eog.push(id);
                }
            }
        }
        let mut add_bos = f
            .get_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(add_bos_default);
        // Gemma 4 files may say false, but the model needs BOS (llama.cpp overrides it too).
        if pre_name == "gemma4" {
            add_bos = true;
        }
        Ok(Self {
            model,
            add_bos: add_bos && bos.is_some(),
            add_eos: f.get_bool("tokenizer.ggml.add_eos_token").unwrap_or(false) && eos.is_some(),
            add_space_prefix: f
                .get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(add_space_default),
            unk: token_id(f, "tokenizer.ggml.unknown_token_id", n)?,
            model_name,
            pre_name,
            pieces,
            scores,
            types,
            ids,
            byte_ids,
            specials,
            bos,
            eos,
            eog,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Text → ids. `add_special` puts BOS first (and EOS last) when the model wants it;
    /// `parse_special` also matches control tokens such as `<start_of_turn>` written in the text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        // SentencePiece puts a space before text that starts the input or follows a special.
        let mut after_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Frag::Special(id) => {
                    out.push(id);
                    after_special = true;
                }
                Frag::Text(t) => {
                    self.encode_text(t, after_special, &mut out);
                    after_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn encode_text(&self, t: &str, after_special: bool, out: &mut Vec<u32>) {
        match &self.model {
            Model::Spm { by_words } => {
                let prefix = if after_special && self.add_space_prefix {
                    " "
                } else {
                    ""
                };
                let norm = format!("{prefix}{t}").replace(' ', "\u{2581}");
                spm::encode(
                    &norm,
                    &self.ids,
                    &self.scores,
                    &self.byte_ids,
                    self.unk,
                    *by_words,
                    out,
                );
            }
            Model::Bpe {
                bpe,
                pre,
                escape_spaces,
            } => {
                let escaped;
                let t = if *escape_spaces {
                    escaped = t.replace(' ', "\u{2581}");
                    escaped.as_str()
                } else {
                    t
                };
                for (s, e) in pre.split(t) {
                    bpe.encode_word(&t[s..e], &self.ids, out);
                }
            }
            Model::Wpm(wpm) => wpm.encode(t, &self.ids, out),
        }
    }

    /// Splits text around special tokens, longest special first (as llama.cpp does).
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Frag<'t>> {
        let mut frags = Vec::new();
        if !text.is_empty() {
            frags.push(Frag::Text(text));
        }
        for sp in &self.specials {
            if sp.control && !parse_special {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Frag::Text(mut t) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = t.find(sp.text.as_str()) {
                    if at > 0 {
                        next.push(Frag::Text(&t[..at]));
                    }
                    next.push(Frag::Special(sp.id));
                    t = &t[at + sp.text.len()..];
                    if sp.rstrip {
                        t = t.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
                    }
                }
                if !t.is_empty() {
                    next.push(Frag::Text(t));
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes token `id` stands for in text (control tokens stand for nothing).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(p) = self.pieces.get(id as usize) else {
            return Vec::new();
        };
        let ty = self.types[id as usize];
        if ty == TYPE_CONTROL {
            return Vec::new();
        }
        if ty == TYPE_BYTE {
            if let Some(b) = self.byte_ids.iter().position(|&x| x == Some(id)) {
                return vec![b as u8];
            }
        }
        match &self.model {
            Model::Bpe { bpe, .. } if bpe.byte_encode && ty != TYPE_USER_DEFINED => {
                bpe::piece_bytes(p)
            }
            Model::Bpe { bpe, .. } if bpe.byte_encode => p.clone().into_bytes(),
            _ => p.replace('\u{2581}', " ").into_bytes(),
        }
    }

    /// The raw vocabulary piece (for display).
    pub fn piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", |s| s.as_str())
    }

    /// Ids → text (invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&i| self.token_bytes(i)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Control and unknown tokens: they never stand for text, only for themselves.
    pub fn is_control(&self, id: u32) -> bool {
        matches!(
            self.types.get(id as usize),
            Some(&TYPE_CONTROL) | Some(&TYPE_UNKNOWN)
        )
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
}

enum Frag<'t> {
    Text(&'t str),
    Special(u32),
}
