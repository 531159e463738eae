//! Tokenizer built from the GGUF vocabulary: SentencePiece-BPE (`llama` model: Gemma, Llama 2)
//! and GPT-2 byte-level BPE (`gpt2` model: GPT-2, Llama 3, Qwen2). Special and user-defined
//! tokens are cut out of the text first (longest first), the rest is BPE-encoded. Decoding
//! gives bytes; `stream::Detokenizer` turns a token stream into valid UTF-8 text.

mod bpe;
mod spm;
pub mod stream;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spm,
    Gpt2,
}

/// GGUF token types.
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

pub struct Tokenizer {
    kind: Kind,
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    /// GPT-2 merges: (left, right) → rank.
    merges: HashMap<(String, String), u32>,
    /// Tokens matched verbatim in text, longest first: (text, id, is_control).
    specials: Vec<(String, u32, bool)>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End-of-generation tokens (eos, Gemma's `<end_of_turn>`, …).
    pub eog: Vec<u32>,
    unk: Option<u32>,
    pub add_bos: bool,
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

impl Tokenizer {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f.get_str("tokenizer.ggml.model")?;
        let kind = match model {
            "llama" => Kind::Spm,
            "gpt2" => Kind::Gpt2,
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer model `{other}` is not supported (llama, gpt2)"
                )))
            }
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
        let mut ids = HashMap::with_capacity(n);
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
        let merges = match (kind, f.get("tokenizer.ggml.merges")) {
            (Kind::Gpt2, Some(Value::Array(a))) => a
                .iter()
                .enumerate()
                .filter_map(|(rank, v)| match v {
                    Value::Str(s) => s
                        .split_once(' ')
                        .map(|(l, r)| ((l.to_string(), r.to_string()), rank as u32)),
                    _ => None,
                })
                .collect(),
            (Kind::Gpt2, _) => {
                return Err(Error::meta(
                    "tokenizer.ggml.merges",
                    "missing (needed by the gpt2 tokenizer)",
                ))
            }
            _ => HashMap::new(),
        };
        let mut specials: Vec<(String, u32, bool)> = (0..n)
            .filter(|&i| {
                (types[i] == TYPE_CONTROL || types[i] == TYPE_USER_DEFINED) && !pieces[i].is_empty()
            })
            .map(|i| (pieces[i].clone(), i as u32, types[i] == TYPE_CONTROL))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
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
        Ok(Self {
            kind,
            add_bos: f
                .get_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(kind == Kind::Spm)
                && bos.is_some(),
            add_space_prefix: f
                .get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(kind == Kind::Spm),
            unk: token_id(f, "tokenizer.ggml.unknown_token_id", n)?,
            pieces,
            scores,
            types,
            ids,
            byte_ids,
            merges,
            specials,
            bos,
            eos,
            eog,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Text → ids. `add_special` puts BOS first when the model wants it; `parse_special` also
    /// matches control tokens such as `<start_of_turn>` written in the text.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut first = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Frag::Special(id) => out.push(id),
                Frag::Text(t) => match self.kind {
                    Kind::Spm => {
                        let prefix = if first && self.add_space_prefix {
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
                            &mut out,
                        );
                    }
                    Kind::Gpt2 => bpe::encode(t, &self.ids, &self.merges, &mut out),
                },
            }
            first = false;
        }
        out
    }

    /// Splits text around special tokens, longest special first (as llama.cpp does).
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Frag<'t>> {
        let mut frags = vec![Frag::Text(text)];
        for (piece, id, control) in &self.specials {
            if *control && !parse_special {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Frag::Text(mut t) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = t.find(piece.as_str()) {
                    if at > 0 {
                        next.push(Frag::Text(&t[..at]));
                    }
                    next.push(Frag::Special(*id));
                    t = &t[at + piece.len()..];
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
        match self.kind {
            Kind::Spm => p.replace('\u{2581}', " ").into_bytes(),
            Kind::Gpt2 if ty == TYPE_USER_DEFINED => p.clone().into_bytes(),
            Kind::Gpt2 => bpe::piece_bytes(p),
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

    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
}

enum Frag<'t> {
    Text(&'t str),
    Special(u32),
}
