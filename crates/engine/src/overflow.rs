//! What a sequence does when it reaches the end of its context. By default it stops
//! (`finish_reason: length`; a request that would run past the context is refused up front).
//! `Overflow::Stream` goes on as StreamingLLM (Xiao et al., 2023) does: the sequence keeps its
//! first tokens (the attention sinks, whole KV blocks) and its most recent ones, forgets the
//! middle, and the positions after the gap move down, so the window always lies inside the
//! positions the model was trained on.
//!
//! Keys are cached after RoPE, as attention reads them; a shift turns the kept keys back by the
//! length of the gap (`Runner::shift_keys`). Caching keys before RoPE instead would make every
//! attention read rotate every cached key again, for every query tile; a shift happens once per
//! quarter window and turns each kept key once. Dropping a quarter of the window at a time (not
//! a token at a time) also bounds how often one key is turned (and, in f16, rounded): about three
//! times in its life. Between shifts a query sees from three quarters of the window to all of it.

use crate::error::{Error, Result};
use crate::model::KV_BLOCK_SIZE;

/// What a sequence does at the end of its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Stop there (the default): a request longer than the context is refused.
    #[default]
    Stop,
    /// Keep the sinks and the recent window, forget the middle, go on.
    Stream(Stream),
}

/// Parameters of streaming past the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// Most tokens a sequence holds in its KV; `None`: the model's context, or the KV cache's
    /// capacity when that is smaller.
    pub window: Option<usize>,
    /// Tokens kept from the start of the sequence: a multiple of the KV block size (16), 0 for
    /// none.
    pub sinks: usize,
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            window: None,
            sinks: KV_BLOCK_SIZE,
        }
    }
}

/// A stream's window once the engine's limits are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub size: usize,
    pub sinks: usize,
}

impl Stream {
    /// The window for a model of `context` positions, a cache of `kv_tokens` and sliding
    /// windows of at most `sliding` tokens (0: none). The window must leave room, after a drop,
    /// for a whole sliding window behind the gap (so those layers never read the sinks, which
    /// fell out of their window long before).
    pub fn resolve(&self, context: usize, kv_tokens: usize, sliding: usize) -> Result<Window> {
        let bs = KV_BLOCK_SIZE;
        if !self.sinks.is_multiple_of(bs) {
            return Err(Error::param(
                "sink_tokens",
                format!(
                    "{} is not a multiple of the KV block size ({bs})",
                    self.sinks
                ),
            ));
        }
        let size = self.window.unwrap_or(context.min(kv_tokens));
        if size > context {
            return Err(Error::param(
                "window",
                format!("{size} is more than the model's context of {context} tokens"),
            ));
        }
        if size > kv_tokens {
            return Err(Error::param(
                "window",
                format!("{size} is more than the KV cache's {kv_tokens} tokens"),
            ));
        }
        let least = 2 * (self.sinks + bs + sliding.max(2 * bs));
        if size < least {
            return Err(Error::param(
                "window",
                format!(
                    "{size} is too small: with {} sink tokens and sliding windows of {sliding} \
                     it must be at least {least}",
                    self.sinks
                ),
            ));
        }
        Ok(Window {
            size,
            sinks: self.sinks,
        })
    }
}

impl Window {
    /// Most tokens a streaming sequence runs in one step.
    pub fn max_chunk(&self) -> usize {
        self.size / 4
    }

    /// Tokens to forget before a sequence holding `len` tokens runs `n` more (`n` at most
    /// `max_chunk`): none while they fit, else enough for them and at least a quarter of the
    /// window, in whole blocks.
    pub fn to_drop(&self, len: usize, n: usize) -> usize {
        if len + n <= self.size {
            return 0;
        }
        (len + n - self.size)
            .max(self.size / 4)
            .next_multiple_of(KV_BLOCK_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_a_quarter_in_whole_blocks_only_when_full() {
        let w = Stream::default().resolve(32768, 4096, 512).unwrap();
        assert_eq!((w.size, w.sinks), (4096, 16));
        assert_eq!(w.to_drop(4095, 1), 0);
        assert_eq!(w.to_drop(4096, 1), 1024);
        assert_eq!(w.to_drop(4000, 1000), 1024);
        assert_eq!(w.to_drop(4096, 1030), 1040);
        // After any drop a whole sliding window lies between the sinks and the next query.
        for len in [3073, 3584, 4096] {
            let d = w.to_drop(len, 4096 - len + 1);
            assert!(len - d - w.sinks >= 512, "len {len} drops {d}");
        }
    }

    #[test]
    fn bad_windows_are_named() {
        let s = |window, sinks| Stream { window, sinks };
        let e = |r: Result<Window>| r.unwrap_err().to_string();
        assert!(e(s(None, 4).resolve(4096, 4096, 0)).contains("multiple of the KV block size"));
        assert!(e(s(Some(8192), 16).resolve(4096, 8192, 0)).contains("model's context"));
        assert!(e(s(Some(4096), 16).resolve(8192, 2048, 0)).contains("KV cache"));
        assert!(e(s(Some(1024), 16).resolve(8192, 8192, 512)).contains("at least 1088"));
        assert_eq!(s(None, 0).resolve(8192, 2048, 0).unwrap().size, 2048);
    }
}
