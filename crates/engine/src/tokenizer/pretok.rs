//! Pre-tokenizers: the regex splits that cut text into words before BPE, one list per value of
//! `tokenizer.ggml.pre`. The patterns are the models' own (their tokenizer.json `Split` steps,
//! as llama.cpp lists them); each step cuts every piece of the previous one into its matches and
//! the text between them ("isolated" splits), with exact Unicode categories.
//!
//! Speed: nearly every pattern ends in `\s+(?!\S)` (optionally `|\s+`), the one look-around the
//! DFA engines lack. Such a pattern runs as two patterns of one leftmost-first `meta::Regex` —
//! the rest, and a plain `\s+` — and a `\s+` match followed by more text gives back its last
//! character, exactly what backtracking `(?!\S)` does. Patterns with other look-arounds run
//! under `fancy_regex` (a backtracking engine) unchanged.

use crate::error::{Error, Result};
use regex_automata::{meta, Input};

/// How a pattern's trailing whitespace alternative reads.
#[derive(Clone, Copy, PartialEq)]
enum WsTail {
    /// `\s+(?!\S)`: one whitespace character before a word matches nothing.
    Lookahead,
    /// `\s+(?!\S)|\s+`: one whitespace character before a word is a match of its own.
    LookaheadThenAny,
}

enum Step {
    /// A DFA-able regex; with `tail`, pattern 1 of `re` is the plain `\s+` standing for it.
    Fast {
        re: meta::Regex,
        tail: Option<WsTail>,
    },
    /// Anything with look-around beyond the trailing whitespace rule.
    Fancy(Box<fancy_regex::Regex>),
}

pub struct PreTokenizer {
    steps: Vec<Step>,
}

// The patterns shared by several families (each model's tokenizer.json; contractions written
// as `'[sS]` classes instead of `(?i:…)`, as llama.cpp does, so `ſ` and the Kelvin sign are
// not folded into them).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const CONTRACTIONS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const LLAMA3_REST: &str =
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REST: &str =
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_REST: &str = r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEEPSEEK3_MAIN: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
const DEEPSEEK_CJK: &str = r"[一-龥ࠀ-一가-퟿]+";
/// DeepSeek LLM's Latin, Greek, Cyrillic, … letters (written as code points: several of
/// them change under Unicode normalisation, which editors apply).
const LATIN_SCRIPTS: &str = concat!(
    r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}",
    r"\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}",
    r"\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}",
    r"\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}",
    r"\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}",
    r"\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}",
    r"\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}",
    r"\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}",
    r"\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}",
    r"\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}",
    r"\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}",
    r"\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}",
    r"\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}",
    r"\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}",
    r"\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}",
    r"\x{1E900}-\x{1E943}]+",
);
const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const NEWLINES: &str = r"[^\n]+|[\n]+";
const KIMI_K2: &str = r"[\p{Han}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split patterns of pre-tokenizer `pre` (None: not a pre-tokenizer llama.cpp knows).
fn patterns(pre: &str) -> Option<Vec<String>> {
    let s = |p: &str| p.to_string();
    let c = |rest: &str| format!("{CONTRACTIONS}{rest}");
    let starcoder = vec![s(r"\p{N}"), s(GPT2)];
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" | "glm5" => {
            vec![c(LLAMA3_REST)]
        }
        "jais-2" => vec![c(concat!(
            r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+",
            r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)",
            r"|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}"
        ))],
        "deepseek-llm" => vec![
            s(r"[\r\n]"),
            s(LATIN_SCRIPTS),
            s(r"\s?[!-/:-~！-／：-～‘-‟　-。]+"),
            s(r"\s+$"),
            s(DEEPSEEK_CJK),
            s(r"\p{N}+"),
        ],
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
            vec![s(r"\p{N}{1,3}"), s(r"[一-龥぀-ゟ゠-ヿ]+"), s(DEEPSEEK3_MAIN)]
        }
        "spark2_5" => vec![
            s(r"\p{N}{1,3}"),
            s(r"[一-龥぀-ゟ゠-ヿ]+"),
            s(&DEEPSEEK3_MAIN.replace(
                r"[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|",
                r"[\p{P}\p{S}]+|[\r\n]|",
            )),
            s(r"\p{N}"),
        ],
        "youtu" => vec![
            s(r"[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+"),
            s(&GPT4O.replace(r"\p{N}{1,3}", r"\p{N}")),
        ],
        "deepseek-coder" => vec![
            s(r"[\r\n]"),
            s(r"\s?\p{L}+"),
            s(r"\s?\p{P}+"),
            s(DEEPSEEK_CJK),
            s(r"\p{N}"),
        ],
        "falcon" => vec![s(r"[\p{P}\$\+<=>\^~\|`]+"), s(GPT2), s(r"[0-9][0-9][0-9]")],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => starcoder,
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "exaone4" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" => vec![s(GPT2)],
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" => vec![c(QWEN2_REST)],
        "qwen35" => vec![c(QWEN35_REST)],
        "poro-chat" | "bloom" | "gpt3-finnish" => vec![s(BLOOM)],
        "viking" => vec![s(BLOOM), s(r"\p{N}")],
        "tekken" => vec![s(&GPT4O
            .replace(
                r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?",
                "",
            )
            .replace(r"\p{N}{1,3}", r"\p{N}"))],
        "chameleon" => vec![
            s(r"<sentinel:[0-9]+>"),
            s(r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z"),
            s(r"([\t\n]|    |  )"),
            s(r"\p{N}"),
            s(r"[\p{P}!-/:-@\[-`{-~]"),
            s(GPT2),
        ],
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => vec![s(GPT4O)],
        // llama.cpp's form: a letter or mark other than a-z, then others than A-Z.
        "granite-embed-multi-97m" => vec![s(&GPT4O
            .replace(
                r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]",
                r"[[\p{L}\p{M}]&&[^a-z]]",
            )
            .replace(r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]", r"[[\p{L}\p{M}]&&[^A-Z]]"))],
        "tiny_aya" | "cohere2moe" => vec![s(r"\d{1,3}(?=(?:\d{3})*\b)"), s(GPT4O)],
        "kimi-k2" => vec![s(KIMI_K2)],
        "superbpe" => vec![s(r"\p{N}+"), s(r"(?=(\d{3})+(?!\d))")],
        "bailingmoe" | "bailingmoe2" | "llada-moe" => vec![s(concat!(
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"
        ))],
        "seed-coder" => vec![c(concat!(
            r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+",
            r"|\s+(?!\S)|\s+"
        ))],
        "ufakzeka" => vec![s(&QWEN2_REST[1..])],
        "afmoe" => vec![
            s(r"\p{N}{1,3}(?=(?:\p{N}{3})*(?!\p{N}))"),
            s(r"[一-鿿㐀-䶿豈-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+"),
            s(DEEPSEEK3_MAIN),
        ],
        "laguna" => vec![s(NEWLINES), c(QWEN2_REST)],
        "exaone-moe" => vec![c(concat!(
            r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?",
            r"|\s*[\r\n]|\s+(?!\S)|\s+"
        ))],
        "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" => vec![s(NEWLINES)],
        "minicpm5" => vec![
            s(r"\p{N}{1,3}"),
            c(&LLAMA3_REST.replace(r"\p{N}{1,3}", r"\p{N}+")),
        ],
        "whitespace" => vec![s(r"\S+")],
        "default" => vec![
            s(r"[\p{P}\$\+<=>\^~\|]+"),
            s(GPT2),
            s(r"\p{N}+"),
            s(r"[0-9][0-9][0-9]"),
        ],
        _ => return None,
    })
}

impl Step {
    fn compile(pattern: &str) -> Result<Self> {
        let tail = [
            (r"|\s+(?!\S)|\s+", WsTail::LookaheadThenAny),
            (r"|\s+(?!\S)", WsTail::Lookahead),
        ]
        .into_iter()
        .find_map(|(suffix, t)| pattern.strip_suffix(suffix).map(|head| (head, t)));
        let fast = match tail {
            Some((head, t)) => meta::Regex::new_many(&[head, r"\s+"]).map(|re| (re, Some(t))),
            None => meta::Regex::new(pattern).map(|re| (re, None)),
        };
        if let Ok((re, tail)) = fast {
            return Ok(Step::Fast { re, tail });
        }
        fancy_regex::Regex::new(pattern)
            .map(|re| Step::Fancy(Box::new(re)))
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer pattern {pattern:?}: {e}")))
    }

    /// Cuts `hay` into matches and the text between them: byte ranges, appended to `out`.
    fn split(&self, hay: &str, base: usize, out: &mut Vec<(usize, usize)>) {
        let mut last = 0;
        let emit = |s: usize, e: usize, last: &mut usize, out: &mut Vec<(usize, usize)>| {
            if s > *last {
                out.push((base + *last, base + s));
            }
            if e > s {
                out.push((base + s, base + e));
            }
            *last = e;
        };
        match self {
            Step::Fast { re, tail } => {
                let mut pos = 0;
                while pos < hay.len() {
                    let Some(m) = re.search(&Input::new(hay).range(pos..)) else {
                        break;
                    };
                    let (s, mut e) = (m.start(), m.end());
                    if tail.is_some() && m.pattern().as_usize() == 1 && e < hay.len() {
                        // A whitespace run followed by a word: `(?!\S)` gives back its last
                        // character; a run of one then fails, unless `|\s+` takes it.
                        let last_char = hay[..e].char_indices().next_back().map_or(s, |c| c.0);
                        if last_char > s {
                            e = last_char;
                        } else if *tail == Some(WsTail::Lookahead) {
                            pos = e;
                            continue;
                        }
                    }
                    emit(s, e, &mut last, out);
                    pos = if e > s { e } else { next_char(hay, e) };
                }
            }
            Step::Fancy(re) => {
                let mut pos = 0;
                while pos <= hay.len() {
                    let Ok(Some(m)) = re.find_from_pos(hay, pos) else {
                        break;
                    };
                    let (s, e) = (m.start(), m.end());
                    if e == s {
                        // An empty match (a pure look-ahead) still cuts the text there.
                        if s > last {
                            out.push((base + last, base + s));
                            last = s;
                        }
                        pos = next_char(hay, s);
                        if pos > hay.len() {
                            break;
                        }
                        continue;
                    }
                    emit(s, e, &mut last, out);
                    pos = e;
                }
            }
        }
        if last < hay.len() {
            out.push((base + last, base + hay.len()));
        }
    }
}

fn next_char(hay: &str, at: usize) -> usize {
    at + hay[at..].chars().next().map_or(1, char::len_utf8)
}

impl PreTokenizer {
    /// The pre-tokenizer named `pre`; an error names it when llama.cpp's list lacks it.
    pub fn new(pre: &str) -> Result<Self> {
        let patterns = patterns(pre).ok_or_else(|| {
            Error::Tokenizer(format!(
                "pre-tokenizer `{pre}` (tokenizer.ggml.pre) is not supported"
            ))
        })?;
        let steps = patterns
            .iter()
            .map(|p| Step::compile(p))
            .collect::<Result<_>>()?;
        Ok(Self { steps })
    }

    /// Byte ranges of the words of `text`, in order, covering all of it.
    pub fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut pieces = vec![(0, text.len())];
        let mut next = Vec::new();
        for step in &self.steps {
            next.clear();
            for &(s, e) in &pieces {
                step.split(&text[s..e], s, &mut next);
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        pieces.retain(|&(s, e)| e > s);
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words<'t>(pre: &str, text: &'t str) -> Vec<&'t str> {
        let p = PreTokenizer::new(pre).unwrap();
        p.split(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    #[test]
    fn gpt2_whitespace_gives_its_last_space_to_the_next_word() {
        assert_eq!(
            words("gpt-2", "Hello world's  end\n"),
            vec!["Hello", " world", "'s", " ", " end", "\n"]
        );
        // A lone tab before a word matches nothing and stays a piece of its own.
        assert_eq!(words("gpt-2", "a\tb"), vec!["a", "\t", "b"]);
        assert_eq!(words("gpt-2", "a1 22!?"), vec!["a", "1", " 22", "!?"]);
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines_together() {
        assert_eq!(
            words("llama-bpe", "12345 ½\n\n  x"),
            vec!["123", "45", " ", "½", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn every_listed_pre_tokenizer_compiles_and_unknown_ones_are_named() {
        for pre in [
            "llama-bpe",
            "jais-2",
            "deepseek-llm",
            "deepseek-v3",
            "spark2_5",
            "youtu",
            "deepseek-coder",
            "falcon",
            "starcoder",
            "gpt-2",
            "qwen2",
            "qwen35",
            "bloom",
            "viking",
            "tekken",
            "chameleon",
            "gpt-4o",
            "granite-embed-multi-97m",
            "tiny_aya",
            "kimi-k2",
            "superbpe",
            "bailingmoe",
            "seed-coder",
            "ufakzeka",
            "afmoe",
            "laguna",
            "exaone-moe",
            "gemma4",
            "minicpm5",
            "whitespace",
            "default",
        ] {
            let p = PreTokenizer::new(pre).unwrap_or_else(|e| panic!("{pre}: {e}"));
            let text = "Hello, world! 1234567 ½ 東京 ÄÖ   \n\t x's";
            let cover: usize = p.split(text).iter().map(|(s, e)| e - s).sum();
            assert_eq!(cover, text.len(), "{pre} covers the text");
        }
        let e = PreTokenizer::new("nonesuch").err().unwrap().to_string();
        assert!(e.contains("nonesuch"), "{e}");
    }

    #[test]
    fn digit_groups_split_from_the_right() {
        assert_eq!(words("tiny_aya", "1234567"), vec!["1", "234", "567"]);
        assert_eq!(words("superbpe", "1234567"), vec!["1", "234", "567"]);
    }
}
