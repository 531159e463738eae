//! GPT-2 byte-level BPE: split text with the GPT-2 pre-tokenizer rules, map each byte to its
//! printable stand-in character, then merge adjacent symbols by merge rank (lowest first).
//! Only the GPT-2 split rules are implemented; Llama 3 / Qwen2 files use them as an approximation.

use std::collections::HashMap;

/// The GPT-2 byte → char table: printable bytes map to themselves, the rest to U+0100 onwards.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| {
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).expect("valid char")
}

/// Inverse of `byte_char` for a whole piece; unknown chars are kept as their UTF-8.
pub fn piece_bytes(piece: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(piece.len());
    for ch in piece.chars() {
        match (0..=255u8).find(|&b| byte_char(b) == ch) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(ch.to_string().as_bytes()),
        }
    }
    out
}

#[derive(PartialEq, Clone, Copy)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Number
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// GPT-2 pre-tokenization: contractions, ` ?letters`, ` ?digits`, ` ?others`, whitespace runs.
fn pre_tokenize(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let end_of = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let rest = &text[chars[i].0..];
        if let Some(c) = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
            .iter()
            .find(|c| rest.starts_with(**c))
        {
            out.push(&rest[..c.len()]);
            i += c.chars().count();
            continue;
        }
        let start = i;
        let mut j = i;
        if chars[j].1 == ' ' && j + 1 < chars.len() && class(chars[j + 1].1) != Class::Space {
            j += 1;
        }
        let cls = class(chars[j].1);
        if cls == Class::Space {
            let mut k = j;
            while k < chars.len() && class(chars[k].1) == Class::Space {
                k += 1;
            }
            // Leave the last space for the next word when one follows.
            if k < chars.len() && k - j > 1 {
                k -= 1;
            }
            j = k;
        } else {
            while j < chars.len() && class(chars[j].1) == cls {
                j += 1;
            }
        }
        out.push(&text[chars[start].0..end_of(j)]);
        i = j;
    }
    out
}

pub fn encode(
    text: &str,
    ids: &HashMap<String, u32>,
    merges: &HashMap<(String, String), u32>,
    out: &mut Vec<u32>,
) {
    for word in pre_tokenize(text) {
        let mut syms: Vec<String> = word.bytes().map(|b| byte_char(b).to_string()).collect();
        loop {
            let best = (0..syms.len().saturating_sub(1))
                .filter_map(|i| {
                    merges
                        .get(&(syms[i].clone(), syms[i + 1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = syms.remove(i + 1);
            syms[i].push_str(&right);
        }
        for s in syms {
            if let Some(&id) = ids.get(&s) {
                out.push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizer_follows_gpt2_rules() {
        assert_eq!(
            pre_tokenize("Hello world's  end\n"),
            vec!["Hello", " world", "'s", " ", " end", "\n"]
        );
        assert_eq!(pre_tokenize("a1 22!?"), vec!["a", "1", " 22", "!?"]);
    }

    #[test]
    fn byte_table_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let piece: String = all.iter().map(|&b| byte_char(b)).collect();
        assert_eq!(piece_bytes(&piece), all);
        assert_eq!(byte_char(b' '), '\u{120}');
    }
}
