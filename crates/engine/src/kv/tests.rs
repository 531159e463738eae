//! The cache's invariants on a small cache of two layer groups (a global layer and a sliding
//! one of window 8), blocks of 4 tokens, 8 blocks per group. Each written row holds its token id,
//! so what a sequence reads back says which block it came from.

use super::{KvCache, KvConfig, KvFull, KvType, SeqId};
use crate::kernels::heads::KvRows;

const BS: usize = 4;

fn cache() -> KvCache {
    KvCache::new(&KvConfig {
        layer_windows: vec![None, Some(8)],
        row: 2,
        block_size: BS,
        capacity_tokens: 32,
        dtype: KvType::F32,
    })
}

/// Appends `tokens` to `id` as the model would: reserve, write every layer, commit.
fn append(kv: &mut KvCache, id: SeqId, tokens: &[u32]) -> Result<(), KvFull> {
    kv.reserve(id, tokens.len())?;
    let start = kv.len(id);
    for (i, &t) in tokens.iter().enumerate() {
        let x = [t as f32; 2];
        for layer in 0..2 {
            kv.write(layer, id, start + i, &x, &x);
        }
    }
    kv.commit(id, tokens);
    Ok(())
}

/// The key row at `pos` of layer 0 (the global one), as the token id written there.
fn read(kv: &KvCache, id: SeqId, pos: usize) -> u32 {
    let view = kv.view(0, id);
    let (_, _, keys, _) = view.runs(pos, pos + 1).next().expect("one run");
    match keys {
        KvRows::F32(k) => k[0] as u32,
        _ => unreachable!("the cache stores f32"),
    }
}

fn ids(n: u32, salt: u32) -> Vec<u32> {
    (0..n).map(|i| 10 + i + 100 * salt).collect()
}

#[test]
fn every_block_comes_back_after_forks_truncations_and_frees() {
    let mut kv = cache();
    let a = kv.new_seq();
    append(&mut kv, a, &ids(10, 1)).unwrap();
    let b = kv.fork(a);
    kv.set_slack(b, 4);
    append(&mut kv, b, &ids(3, 2)).unwrap();
    kv.truncate(b, 10);
    assert_eq!(kv.len(b), 10);
    assert!(kv.used_blocks() > 0);
    kv.free(a);
    kv.free(b);
    assert_eq!(kv.used_blocks(), 0, "no block is left referenced");
}

#[test]
fn a_write_into_a_shared_block_copies_it_first() {
    let mut kv = cache();
    let a = kv.new_private_seq();
    append(&mut kv, a, &ids(6, 0)).unwrap();
    let b = kv.fork(a);
    let (distinct, refs) = kv.blocks_of(&[a, b]);
    assert_eq!(refs, 2 * distinct, "a fork shares every block");
    append(&mut kv, b, &[99]).unwrap();
    // b's partial block was copied before the write: a still reads its own tokens, b reads the
    // copied ones and its new token.
    assert_eq!(kv.len(a), 6);
    for pos in 0..6 {
        assert_eq!(read(&kv, a, pos), 10 + pos as u32);
        assert_eq!(read(&kv, b, pos), 10 + pos as u32);
    }
    assert_eq!(read(&kv, b, 6), 99);
    append(&mut kv, a, &[77]).unwrap();
    assert_eq!((read(&kv, a, 6), read(&kv, b, 6)), (77, 99));
    kv.free(a);
    kv.free(b);
    assert_eq!(kv.used_blocks(), 0);
}

#[test]
fn reserve_is_all_or_nothing() {
    let mut kv = cache();
    let a = kv.new_private_seq();
    append(&mut kv, a, &ids(30, 1)).unwrap();
    let used = kv.used_blocks();
    assert_eq!(kv.reserve(a, 3), Err(KvFull), "32 tokens of room, 33 asked");
    assert_eq!((kv.used_blocks(), kv.len(a)), (used, 30), "nothing changed");
    assert_eq!(kv.reserve(a, 2), Ok(()));
    kv.free(a);
    assert_eq!(kv.used_blocks(), 0);
}

#[test]
fn prefix_hits_come_from_whole_cached_blocks_never_cover_the_last_token_and_read_back_exactly() {
    let mut kv = cache();
    let prompt = ids(9, 1);
    let a = kv.new_seq();
    append(&mut kv, a, &prompt).unwrap();
    kv.free(a);
    assert_eq!(kv.used_blocks(), 0);
    assert!(
        kv.idle_blocks() > 0,
        "full blocks stay cached when released"
    );
    let (b, hit) = kv.new_seq_cached(&prompt);
    assert_eq!(hit, 8, "two whole blocks; the ninth token is computed");
    for pos in 0..8 {
        assert_eq!(read(&kv, b, pos), prompt[pos]);
    }
    // A prompt that is exactly two cached blocks leaves its last token to compute: it starts
    // inside the second block, which it shares until it writes there (then copies it).
    let (c, hit) = kv.new_seq_cached(&prompt[..8]);
    assert_eq!(hit, 7);
    append(&mut kv, c, &[55]).unwrap();
    assert_eq!((read(&kv, c, 7), read(&kv, b, 7)), (55, prompt[7]));
    // Another prompt shares nothing.
    let (d, hit) = kv.new_seq_cached(&ids(9, 2));
    assert_eq!(hit, 0);
    let stats = kv.prefix_stats();
    assert_eq!((stats.queried_tokens, stats.hit_tokens), (9 + 8 + 9, 8 + 7));
    for s in [b, c, d] {
        kv.free(s);
    }
    assert_eq!(kv.used_blocks(), 0);
    kv.clear_prefix_cache();
    assert_eq!(kv.idle_blocks(), 0);
    let (e, hit) = kv.new_seq_cached(&prompt);
    assert_eq!(hit, 0, "a cleared cache hits nothing");
    kv.free(e);
}

#[test]
fn idle_blocks_are_evicted_when_fresh_ones_run_out() {
    let mut kv = cache();
    let prompt = ids(9, 1);
    let a = kv.new_seq();
    append(&mut kv, a, &prompt).unwrap();
    kv.free(a);
    // A private sequence that needs every block evicts the idle ones.
    let p = kv.new_private_seq();
    append(&mut kv, p, &ids(32, 3)).unwrap();
    assert_eq!(kv.idle_blocks(), 0);
    kv.free(p);
    let (b, hit) = kv.new_seq_cached(&prompt);
    assert_eq!(hit, 0, "the evicted prefix is gone");
    kv.free(b);
    assert_eq!(kv.used_blocks(), 0);
}

#[test]
fn private_sequences_neither_feed_nor_read_the_prefix_cache() {
    let mut kv = cache();
    let prompt = ids(9, 1);
    let a = kv.new_private_seq();
    append(&mut kv, a, &prompt).unwrap();
    kv.free(a);
    assert_eq!((kv.used_blocks(), kv.idle_blocks()), (0, 0));
    let (b, hit) = kv.new_seq_cached(&prompt);
    assert_eq!(hit, 0);
    kv.free(b);
}

#[test]
fn sliding_window_layers_release_blocks_behind_the_window() {
    let mut kv = cache();
    let a = kv.new_private_seq();
    for chunk in ids(28, 1).chunks(4) {
        append(&mut kv, a, chunk).unwrap();
    }
    // The global group holds all 7 blocks; the window group only those a query at position 28
    // can see (positions 21..=28: blocks 5, 6 and the next).
    let (distinct, _) = kv.blocks_of(&[a]);
    assert!(distinct <= 7 + 3, "{distinct} blocks held");
    let view = kv.view(1, a);
    assert_eq!(view.first_visible(28), 21);
    kv.free(a);
    assert_eq!(kv.used_blocks(), 0);
}

#[test]
fn a_cached_block_is_never_written_in_place() {
    let mut kv = cache();
    let prompt = ids(8, 1);
    let a = kv.new_seq();
    kv.set_slack(a, 4);
    append(&mut kv, a, &prompt).unwrap();
    // Take back the last two tokens of the second (cached) block and write others there.
    kv.truncate(a, 6);
    append(&mut kv, a, &[98, 99]).unwrap();
    assert_eq!((read(&kv, a, 6), read(&kv, a, 7)), (98, 99));
    kv.free(a);
    // The cached block still holds the original tokens.
    let mut longer = prompt.clone();
    longer.push(5);
    let (b, hit) = kv.new_seq_cached(&longer);
    assert_eq!(hit, 8);
    assert_eq!((read(&kv, b, 6), read(&kv, b, 7)), (prompt[6], prompt[7]));
    kv.free(b);
    assert_eq!(kv.used_blocks(), 0);
}

#[test]
fn a_hash_collision_never_hands_out_another_prefix() {
    use super::prefix::{block_hash, PrefixIndex, ROOT};
    let mut index = PrefixIndex::default();
    let (t1, t2) = ([1u32, 2, 3, 4], [5u32, 6, 7, 8]);
    let h = block_hash(ROOT, &t1);
    assert!(index.insert(h, ROOT, &t1, 2, 0, 7));
    // Another block under the same name (a collision) is refused and not found.
    assert!(!index.insert(h, ROOT, &t2, 2, 1, 9));
    assert!(index.get(h, ROOT, &t2).is_none());
    assert!(
        index.get(h, 42, &t1).is_none(),
        "another parent is another prefix"
    );
    assert_eq!(index.get(h, ROOT, &t1), Some(&[Some(7), None][..]));
    // A group's copy is recorded once; forgetting every copy drops the entry.
    assert!(!index.insert(h, ROOT, &t1, 2, 0, 8));
    index.forget(h, 0);
    assert!(index.get(h, ROOT, &t1).is_none());
}

#[test]
fn dropping_the_middle_keeps_the_sinks_unshares_the_tail_and_leaves_the_prefix_cache() {
    let mut kv = cache();
    let a = kv.new_seq();
    append(&mut kv, a, &ids(20, 1)).unwrap();
    let b = kv.fork(a);
    let used = kv.used_blocks();
    // Blocks 1 and 2 (positions 4..12) go; blocks 3 and 4 become positions 4..12.
    kv.drop_middle(b, 4, 8).unwrap();
    assert_eq!(kv.len(b), 12);
    let got: Vec<u32> = (0..12).map(|p| read(&kv, b, p)).collect();
    let want: Vec<u32> = (0..4).chain(12..20).map(|i| 10 + i + 100).collect();
    assert_eq!(got, want);
    // The shared tail was copied in both groups (it will be rotated: 2 global blocks and the 2
    // the sliding group still holds); the sink block is still shared.
    assert_eq!(kv.blocks_of(&[a, b]), (used + 4, used + 5));
    // The keys of `a` did not change when `b` rewrites its own.
    kv.map_keys(0, b, 4, &|row| row.iter_mut().for_each(|x| *x += 1000.0));
    assert_eq!(read(&kv, a, 12), 22 + 100);
    assert_eq!(read(&kv, b, 4), 1022 + 100);
    assert_eq!(read(&kv, b, 3), 13 + 100);
    // `b`'s blocks feed the prefix cache no more: a prompt like `b`'s tokens finds only `a`'s.
    append(&mut kv, b, &ids(4, 3)).unwrap();
    kv.free(a);
    let mut prompt: Vec<u32> = (0..4).chain(12..20).map(|i| 10 + i + 100).collect();
    prompt.extend(ids(4, 3));
    prompt.push(7);
    let (c, hit) = kv.new_seq_cached(&prompt);
    assert_eq!(
        hit, 4,
        "only the sink block, which `a` registered, is a hit"
    );
    kv.free(b);
    kv.free(c);
    assert_eq!(kv.used_blocks(), 0);
}

#[test]
fn a_private_tail_is_rotated_in_place_and_leaves_the_prefix_cache() {
    let mut kv = cache();
    let a = kv.new_seq();
    append(&mut kv, a, &ids(16, 1)).unwrap();
    let used = kv.used_blocks();
    kv.drop_middle(a, 4, 4).unwrap();
    // One block released in each group that still held it; nothing copied.
    assert!(kv.used_blocks() < used);
    kv.map_keys(0, a, 4, &|row| row.iter_mut().for_each(|x| *x = -*x));
    assert_eq!(
        read(&kv, a, 4) as i64,
        0,
        "negated keys read back as 0 through `as u32`"
    );
    kv.free(a);
    // A prompt of the original tokens finds the sink block and the dropped one (idle in the
    // prefix cache, its keys still right for its tokens), not the rewritten blocks after them.
    let (c, hit) = kv.new_seq_cached(&ids(17, 1));
    assert_eq!(hit, 8);
    kv.free(c);
}
