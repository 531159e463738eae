//! SentencePiece-style BPE (Gemma, Llama 2): start from single characters and repeatedly merge
//! the adjacent pair whose concatenation is a vocabulary piece with the highest score (leftmost
//! on ties); characters that never become a piece fall back to `<0xNN>` byte tokens.
//! A heap over candidate pairs keeps this O(n log n) for long texts; when no piece has a `▁`
//! after another character (true of Llama's and Gemma's vocabularies), no merge can cross the
//! start of a word, so each word runs on a heap of its own (the same result, cache-friendly).

use super::Vocab;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Clone, Copy)]
struct Sym {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pair {
    fn cmp(&self, o: &Self) -> Ordering {
        // Max-heap: higher score first, then the leftmost pair.
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// Byte offsets in `s` where a '▁' follows another character: word starts inside the text.
fn inner_word_starts(s: &str) -> impl Iterator<Item = usize> + '_ {
    s.char_indices()
        .zip(std::iter::once(None).chain(s.chars().map(Some)))
        .filter(|&((_, c), prev)| c == '\u{2581}' && prev.is_some_and(|q| q != '\u{2581}'))
        .map(|((i, _), _)| i)
}

/// Whether no piece of `pieces` has a word start inside it, so that merges never cross one.
pub fn words_are_independent<'a>(mut pieces: impl Iterator<Item = &'a String>) -> bool {
    pieces.all(|p| inner_word_starts(p).next().is_none())
}

/// Encodes `text` (already normalised: spaces as '▁') into ids, appending to `out`; with
/// `by_words` (see `words_are_independent`) one word at a time.
pub fn encode(
    text: &str,
    pieces: &Vocab,
    scores: &[f32],
    byte_ids: &[Option<u32>; 256],
    unk: Option<u32>,
    by_words: bool,
    out: &mut Vec<u32>,
) {
    let mut start = 0;
    if by_words {
        for at in inner_word_starts(text) {
            encode_run(&text[start..at], pieces, scores, byte_ids, unk, out);
            start = at;
        }
    }
    encode_run(&text[start..], pieces, scores, byte_ids, unk, out);
}

fn encode_run(
    text: &str,
    pieces: &Vocab,
    scores: &[f32],
    byte_ids: &[Option<u32>; 256],
    unk: Option<u32>,
    out: &mut Vec<u32>,
) {
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (start, ch)) in text.char_indices().enumerate() {
        syms.push(Sym {
            start,
            len: ch.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    if let Some(last) = syms.last_mut() {
        last.next = None;
    }
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Pair>, syms: &[Sym], l: usize, r: usize| {
        let s = &text[syms[l].start..syms[r].start + syms[r].len];
        if let Some(&id) = pieces.get(s) {
            heap.push(Pair {
                score: scores[id as usize],
                left: l,
                right: r,
                len: s.len(),
            });
        }
    };
    for i in 1..syms.len() {
        push(&mut heap, &syms, i - 1, i);
    }
    while let Some(p) = heap.pop() {
        let (l, r) = (syms[p.left], syms[p.right]);
        // Stale candidate: one side was merged away since it was queued.
        if l.len == 0 || r.len == 0 || l.len + r.len != p.len || l.next != Some(p.right) {
            continue;
        }
        syms[p.left].len += r.len;
        syms[p.left].next = r.next;
        syms[p.right].len = 0;
        if let Some(n) = r.next {
            syms[n].prev = Some(p.left);
        }
        if let Some(pv) = l.prev {
            push(&mut heap, &syms, pv, p.left);
        }
        if let Some(n) = r.next {
            push(&mut heap, &syms, p.left, n);
        }
    }
    let mut i = if syms.is_empty() { None } else { Some(0) };
    while let Some(at) = i {
        let s = syms[at];
        let piece = &text[s.start..s.start + s.len];
        match pieces.get(piece) {
            Some(&id) => out.push(id),
            None => {
                for b in piece.bytes() {
                    if let Some(id) = byte_ids[b as usize].or(unk) {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}
