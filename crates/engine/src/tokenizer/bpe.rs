//! BPE over pre-tokenized words: GPT-2 byte-level (each byte stands as a printable character,
//! as in GPT-2, Llama 3, Qwen) or raw UTF-8 characters (Gemma 4, whose unknown bytes fall back to
//! `<0xNN>` tokens). Adjacent symbols merge by merge rank, lowest first and leftmost on ties, off
//! a heap of candidate pairs: O(n log n) in the word's length.

use super::Vocab;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

/// The GPT-2 byte → char table: printable bytes map to themselves, the rest to U+0100 onwards.
fn byte_chars() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| {
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
        };
        let mut t = ['\0'; 256];
        let mut next = 256;
        for b in 0..=255u8 {
            t[b as usize] = if printable(b) {
                b as char
            } else {
                next += 1;
                char::from_u32(next - 1).expect("below U+0200")
            };
        }
        t
    })
}

/// The printable stand-in of byte `b`.
pub fn byte_char(b: u8) -> char {
    byte_chars()[b as usize]
}

/// Inverse of the byte table for a whole piece; chars outside it are kept as their UTF-8.
pub fn piece_bytes(piece: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(piece.len());
    for ch in piece.chars() {
        let code = ch as u32;
        let b = match code {
            0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(code as u8),
            0x100..=0x143 => Some(byte_chars().iter().position(|&c| c == ch).unwrap() as u8),
            _ => None,
        };
        match b {
            Some(b) => out.push(b),
            None => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// The merge table and how words become symbols. Symbols are token ids, or ids past the
/// vocabulary for strings that only the merge list names (llama.cpp merges by string, so a
/// merge may produce a non-token that a later merge completes).
pub struct Bpe {
    /// (left id, right id) → (rank, merged id).
    merges: rustc_hash::FxHashMap<(u32, u32), (u32, u32)>,
    /// Ids (from `n_vocab` on) of the merge list's strings that are not tokens.
    extra_ids: Vocab,
    n_vocab: u32,
    /// Bytes as GPT-2 characters (true) or raw UTF-8 with `<0xNN>` fallback (false).
    pub byte_encode: bool,
    /// A word that is itself a token is taken whole (Llama 3's `ignore_merges`).
    pub ignore_merges: bool,
    /// The token of each byte's symbol: its stand-in char (byte-level) or `<0xNN>` (raw).
    byte_tokens: [Option<u32>; 256],
}

#[derive(Clone, Copy)]
struct Sym {
    /// Byte span in the word.
    start: usize,
    end: usize,
    id: Option<u32>,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Bpe {
    /// `merges` are "left right" strings in rank order.
    pub fn new(merges: &[&str], ids: &Vocab, byte_encode: bool, ignore_merges: bool) -> Self {
        let n_vocab = ids.values().max().map_or(0, |&m| m + 1);
        let mut extra_ids = Vocab::default();
        let mut id_of = |s: &str| -> u32 {
            if let Some(&id) = ids.get(s) {
                return id;
            }
            if let Some(&id) = extra_ids.get(s) {
                return id;
            }
            let id = n_vocab + extra_ids.len() as u32;
            extra_ids.insert(s.to_string(), id);
            id
        };
        let mut table = rustc_hash::FxHashMap::default();
        table.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // The split is at the first space after the first character, as llama.cpp reads it.
            let Some(at) = m.char_indices().skip(1).find(|c| c.1 == ' ').map(|c| c.0) else {
                continue;
            };
            let (l, r) = (&m[..at], &m[at + 1..]);
            let (li, ri, mi) = (id_of(l), id_of(r), id_of(&format!("{l}{r}")));
            table.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let byte_tokens = std::array::from_fn(|b| {
            let key = if byte_encode {
                byte_char(b as u8).to_string()
            } else {
                format!("<0x{b:02X}>")
            };
            ids.get(&key).copied()
        });
        Self {
            merges: table,
            extra_ids,
            n_vocab,
            byte_encode,
            ignore_merges,
            byte_tokens,
        }
    }

    /// The symbol id of a string: its token, else its merge-list id.
    fn symbol(&self, s: &str, ids: &Vocab) -> Option<u32> {
        ids.get(s).or_else(|| self.extra_ids.get(s)).copied()
    }

    /// Encodes one pre-tokenized word, appending its ids to `out`.
    pub fn encode_word(&self, word: &str, ids: &Vocab, out: &mut Vec<u32>) {
        let newlines = !self.byte_encode && word.bytes().all(|b| b == b'\n');
        if self.ignore_merges || newlines {
            let whole = if self.byte_encode {
                word.bytes().map(byte_char).collect::<String>()
            } else {
                word.to_string()
            };
            if let Some(&id) = ids.get(&whole) {
                out.push(id);
                return;
            }
        }
        // Symbols: bytes as their stand-in characters, or UTF-8 characters.
        let mut syms: Vec<Sym> = Vec::with_capacity(word.len());
        let mut push = |start: usize, end: usize, id: Option<u32>| {
            let i = syms.len();
            syms.push(Sym {
                start,
                end,
                id,
                prev: i.checked_sub(1),
                next: (end < word.len()).then_some(i + 1),
            });
        };
        if self.byte_encode {
            for (i, b) in word.bytes().enumerate() {
                let id = self.byte_tokens[b as usize]
                    .or_else(|| self.symbol(byte_char(b).encode_utf8(&mut [0; 4]), ids));
                push(i, i + 1, id);
            }
        } else {
            for (i, ch) in word.char_indices() {
                push(
                    i,
                    i + ch.len_utf8(),
                    self.symbol(ch.encode_utf8(&mut [0; 4]), ids),
                );
            }
        }
        self.merge(&mut syms);
        let mut at = (!syms.is_empty()).then_some(0);
        while let Some(i) = at {
            let s = syms[i];
            match s.id.filter(|&id| id < self.n_vocab) {
                Some(id) => out.push(id),
                // Not a token: byte by byte, as llama.cpp falls back. Byte-level BPE looks up
                // each byte of the stand-in text alone, which only a printable ASCII byte's
                // stand-in (itself) can match; raw BPE takes the `<0xNN>` tokens.
                None => out.extend(
                    word.as_bytes()[s.start..s.end]
                        .iter()
                        .filter(|&&b| !self.byte_encode || byte_char(b).is_ascii())
                        .filter_map(|&b| self.byte_tokens[b as usize]),
                ),
            }
            at = s.next;
        }
    }

    fn merge(&self, syms: &mut [Sym]) {
        // Candidates: (rank, left index, right index, merged id), lowest rank then leftmost.
        let mut heap = BinaryHeap::new();
        let rank = |syms: &[Sym], l: usize, r: usize| -> Option<(u32, u32)> {
            self.merges.get(&(syms[l].id?, syms[r].id?)).copied()
        };
        for i in 1..syms.len() {
            if let Some((rk, m)) = rank(syms, i - 1, i) {
                heap.push(Reverse((rk, i - 1, i, m)));
            }
        }
        while let Some(Reverse((rk, l, r, m))) = heap.pop() {
            // Stale: a side was merged away or changed since this pair was queued.
            let dead = |i: usize| syms[i].start == syms[i].end;
            if dead(l) || dead(r) || syms[l].next != Some(r) {
                continue;
            }
            if rank(syms, l, r) != Some((rk, m)) {
                continue;
            }
            let right = syms[r];
            syms[l].end = right.end;
            syms[l].id = Some(m);
            syms[l].next = right.next;
            syms[r].end = syms[r].start;
            if let Some(n) = right.next {
                syms[n].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                if let Some((rk, m)) = rank(syms, p, l) {
                    heap.push(Reverse((rk, p, l, m)));
                }
            }
            if let Some(n) = right.next {
                if let Some((rk, m)) = rank(syms, l, n) {
                    heap.push(Reverse((rk, l, n, m)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let piece: String = all.iter().map(|&b| byte_char(b)).collect();
        assert_eq!(piece_bytes(&piece), all);
        assert_eq!(byte_char(b' '), '\u{120}');
    }

    #[test]
    fn merges_apply_lowest_rank_first_and_leftmost_on_ties() {
        let vocab = ["a", "b", "c", "ab", "bc", "abc", "aa", "aaa"];
        let ids: Vocab = vocab
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        let bpe = Bpe::new(&["b c", "a b", "a bc", "a a"], &ids, true, false);
        let enc = |w: &str| {
            let mut out = Vec::new();
            bpe.encode_word(w, &ids, &mut out);
            out.iter().map(|&i| vocab[i as usize]).collect::<Vec<_>>()
        };
        // "b c" outranks "a b": abc → a + bc → abc.
        assert_eq!(enc("abc"), vec!["abc"]);
        assert_eq!(enc("ab"), vec!["ab"]);
        // Equal rank: the leftmost pair first.
        assert_eq!(enc("aaa"), vec!["aa", "a"]);
        // A long word stays exact (and fast).
        let long = "ab".repeat(5000);
        assert_eq!(enc(&long).len(), 5000);
    }
}
