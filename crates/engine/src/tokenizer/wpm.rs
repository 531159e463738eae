//! WordPiece (BERT): the text is normalised (lower-cased; accents stripped by NFD and dropping
//! marks; control characters dropped), cut at whitespace, and punctuation, ASCII symbols and CJK
//! ideographs become words of their own. Each word, with a leading `▁` standing for the word
//! start, is matched greedily by the longest token from the left; a word with any unmatched
//! position becomes the unknown token.

use super::Vocab;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

pub struct Wpm {
    pub lowercase: bool,
    pub strip_accents: bool,
    /// The longest token, in bytes.
    pub max_token_len: usize,
    pub unk: Option<u32>,
}

/// CJK ideographs, as BERT's basic tokenizer lists them.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

impl Wpm {
    /// Appends `c` (one character of the input) to the words, normalised.
    fn push_char(&self, c: char, words: &mut Vec<String>) {
        // ASCII needs neither decomposition nor the category tables.
        let (space, drop, alone) = if c.is_ascii() {
            (
                c.is_ascii_whitespace(),
                c.is_ascii_control(),
                c.is_ascii_punctuation(),
            )
        } else {
            let group = c.general_category_group();
            (
                c.is_whitespace(),
                c == '\u{FFFD}'
                    || (group == GeneralCategoryGroup::Other && !is_unassigned(c))
                    || (self.strip_accents && group == GeneralCategoryGroup::Mark),
                group == GeneralCategoryGroup::Punctuation || is_cjk(c),
            )
        };
        // `words` always ends with the word being built (possibly empty).
        let last_empty = words.last().is_none_or(String::is_empty);
        if space {
            if !last_empty {
                words.push(String::new());
            }
            return;
        }
        if drop {
            return;
        }
        if alone && !last_empty {
            words.push(String::new());
        }
        let last = words.last_mut().expect("a word is open");
        if self.lowercase {
            last.extend(c.to_lowercase());
        } else {
            last.push(c);
        }
        if alone {
            words.push(String::new());
        }
    }

    fn words(&self, text: &str) -> Vec<String> {
        let mut words = vec![String::new()];
        for c in text.chars() {
            if self.strip_accents && !c.is_ascii() {
                // Per character is enough: the marks that reordering would move are dropped.
                for d in std::iter::once(c).nfd() {
                    self.push_char(d, &mut words);
                }
            } else {
                self.push_char(c, &mut words);
            }
        }
        words.retain(|w| !w.is_empty());
        words
    }

    /// The longest token that starts at byte `i` of `word`, and where it ends.
    fn longest_token(&self, word: &str, i: usize, ids: &Vocab) -> Option<(u32, usize)> {
        let mut j = (i + self.max_token_len).min(word.len());
        while j > i {
            if word.is_char_boundary(j) {
                if let Some(&id) = ids.get(&word[i..j]) {
                    return Some((id, j));
                }
            }
            j -= 1;
        }
        None
    }

    pub fn encode(&self, text: &str, ids: &Vocab, out: &mut Vec<u32>) {
        let mut word = String::new();
        for w in self.words(text) {
            word.clear();
            word.push('\u{2581}');
            word.push_str(&w);
            let before = out.len();
            let mut i = 0;
            while i < word.len() {
                let Some((id, j)) = self.longest_token(&word, i, ids) else {
                    out.truncate(before);
                    break;
                };
                out.push(id);
                i = j;
            }
            if out.len() == before {
                out.extend(self.unk);
            }
        }
    }
}

/// Unassigned code points (Cn) are not dropped as control characters are.
fn is_unassigned(c: char) -> bool {
    c.general_category() == unicode_properties::GeneralCategory::Unassigned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_normalised_and_punctuation_stands_alone() {
        let w = Wpm {
            lowercase: true,
            strip_accents: true,
            max_token_len: 8,
            unk: Some(0),
        };
        assert_eq!(
            w.words("Héllo, WORLD!\u{7}x 東京"),
            vec!["hello", ",", "world", "!", "x", "東", "京"]
        );
    }
}
