//! Our tokenizer as llguidance sees it: every token's bytes in a trie (control tokens as the
//! trie's special marker byte followed by their piece, so that no text can spell them), the
//! end-of-generation tokens, and our encoder for text the grammar forces.

use crate::tokenizer::Tokenizer;
use std::sync::Arc;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

struct Env {
    trie: TokTrie,
    tok: Arc<Tokenizer>,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.tok.encode(&String::from_utf8_lossy(s), false, false)
    }
}

pub(super) fn token_env(tok: Arc<Tokenizer>) -> TokEnv {
    let n = tok.vocab_size();
    let words: Vec<Vec<u8>> = (0..n as u32)
        .map(|id| {
            if tok.is_control(id) {
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(tok.piece(id).as_bytes());
                w
            } else {
                tok.token_bytes(id)
            }
        })
        .collect();
    let eos = tok.eos.or(tok.eog.first().copied()).unwrap_or(0);
    let mut info = TokRxInfo::new(n as u32, eos);
    info.tok_bos = tok.bos;
    let trie = TokTrie::from(&info, &words).with_eos_tokens(&tok.eog);
    Arc::new(Env { trie, tok })
}
