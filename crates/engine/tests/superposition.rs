//! The superposition explorer on tiny synthetic models: the tree equals a brute-force reference
//! that recomputes every path from scratch (no KV sharing), `branches 1, width 1` is greedy
//! generation, same seed → same tree, forks share blocks, and bad parameters are refused.

use everett_engine::batch::Batch;
use everett_engine::generate::Request;
use everett_engine::gguf::GgufFile;
use everett_engine::kv::KvCache;
use everett_engine::model::Model;
use everett_engine::oneshot::{explore, generate_batch};
use everett_engine::sample::SamplingParams;
use everett_engine::superposition::{Exploration, ExploreParams, FinishReason, Measure, Status};
use everett_engine::testutil::{tiny_model, Tiny};
use everett_engine::tokenizer::Tokenizer;

const EOS: u32 = 1;

fn load(t: &Tiny) -> (Model, Tokenizer) {
    let f = GgufFile::from_bytes(tiny_model(t, 7)).unwrap();
    (
        Model::from_gguf(&f, 2).unwrap(),
        Tokenizer::from_gguf(&f).unwrap(),
    )
}

fn run(m: &mut Model, tok: &Tokenizer, prompt: &[u32], p: &ExploreParams) -> Exploration {
    explore(m, tok, "", prompt, p).unwrap()
}

/// log softmax(logits / t) of the last token of `tokens`, recomputed from nothing, in f64.
fn logprobs_from_scratch(m: &mut Model, tokens: &[u32], t: f32) -> Vec<f64> {
    let mut kv = KvCache::new(&m.kv_config(tokens.len() + 16));
    let s = kv.new_seq();
    kv.reserve(s, tokens.len()).unwrap();
    let mut b = Batch::default();
    b.push_seq(s, 0, tokens, true);
    let mut logits = Vec::new();
    m.forward(&b, &mut kv, &mut logits).unwrap();
    let x: Vec<f64> = logits.iter().map(|&l| l as f64 / t as f64).collect();
    let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

struct RefNode {
    parent: usize,
    token: u32,
    score: f64,
    status: Status,
}

/// The search as the issue states it, written the slow and obvious way (alpha = 0, top-k).
/// Paths finish on EOS, on a stop string in their text, or at `steps`.
fn brute_force(m: &mut Model, tok: &Tokenizer, prompt: &[u32], p: &ExploreParams) -> Vec<RefNode> {
    let mut nodes = vec![RefNode {
        parent: usize::MAX,
        token: 0,
        score: 0.0,
        status: Status::Live,
    }];
    let path = |nodes: &[RefNode], mut id: usize| {
        let mut toks = Vec::new();
        while id != 0 {
            toks.push(nodes[id].token);
            id = nodes[id].parent;
        }
        toks.reverse();
        toks
    };
    let mut leaves = vec![0usize];
    for depth in 1..=p.steps {
        let mut cands: Vec<(f64, u32, usize)> = Vec::new();
        for &leaf in &leaves {
            let mut toks = prompt.to_vec();
            toks.extend(path(&nodes, leaf));
            let lp = logprobs_from_scratch(m, &toks, p.temperature);
            let floor =
                lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + (p.min_p as f64).ln();
            let mut ids: Vec<u32> = (0..lp.len() as u32)
                .filter(|&i| p.min_p == 0.0 || lp[i as usize] >= floor)
                .collect();
            ids.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
            for &id in ids.iter().take(p.branches) {
                cands.push((nodes[leaf].score + lp[id as usize], id, leaf));
            }
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut next = Vec::new();
        for (i, &(score, token, parent)) in cands.iter().enumerate() {
            let mut toks = path(&nodes, parent);
            toks.push(token);
            let text = tok.decode(&toks);
            let stopped = p.stop.iter().any(|s| text.contains(s.as_str()));
            let status = if i >= p.width {
                Status::Pruned
            } else if token == EOS || stopped || depth == p.steps {
                Status::Finished
            } else {
                next.push(nodes.len());
                Status::Live
            };
            nodes.push(RefNode {
                parent,
                token,
                score,
                status,
            });
        }
        let mut finished: Vec<f64> = nodes
            .iter()
            .filter(|n| n.status == Status::Finished)
            .map(|n| n.score)
            .collect();
        finished.sort_by(|a, b| b.total_cmp(a));
        if finished.len() >= p.width
            && next
                .iter()
                .all(|&id| nodes[id].score <= finished[p.width - 1])
        {
            for &id in &next {
                nodes[id].status = Status::Pruned;
            }
            next.clear();
        }
        if next.is_empty() {
            break;
        }
        leaves = next;
    }
    nodes
}

fn assert_same_tree(e: &Exploration, r: &[RefNode], what: &str) {
    assert_eq!(e.nodes.len(), r.len(), "{what}: node count");
    for (n, want) in e.nodes.iter().zip(r).skip(1) {
        assert_eq!(
            n.parent,
            Some(want.parent),
            "{what}: parent of node {}",
            n.id
        );
        assert_eq!(
            n.token_id,
            Some(want.token),
            "{what}: token of node {}",
            n.id
        );
        assert_eq!(n.status, want.status, "{what}: status of node {}", n.id);
        assert!(
            (n.score - want.score).abs() < 1e-5,
            "{what}: score of node {}: {} vs {}",
            n.id,
            n.score,
            want.score
        );
    }
}

#[test]
fn tree_equals_brute_force_recomputation_on_every_architecture() {
    let prompt = [2u32, 17, 40, 5, 63];
    for t in [Tiny::gemma3(), Tiny::llama(), Tiny::gpt2()] {
        let (mut m, tok) = load(&t);
        for p in [
            ExploreParams {
                branches: 3,
                width: 5,
                steps: 7,
                ..Default::default()
            },
            ExploreParams {
                branches: 4,
                width: 6,
                steps: 5,
                temperature: 0.6,
                min_p: 0.05,
                ..Default::default()
            },
            ExploreParams {
                branches: 2,
                width: 3,
                steps: 9,
                temperature: 2.5,
                ..Default::default()
            },
            // Frequent stop-string finishes exercise the early end (no live path can win).
            ExploreParams {
                branches: 4,
                width: 3,
                steps: 12,
                stop: ["\t", "'", " w8", " w9"].map(String::from).to_vec(),
                ..Default::default()
            },
        ] {
            let what = format!("{} {p:?}", t.arch);
            let reference = brute_force(&mut m, &tok, &prompt, &p);
            let shared = run(&mut m, &tok, &prompt, &p);
            assert_same_tree(&shared, &reference, &what);
            let unshared = run(
                &mut m,
                &tok,
                &prompt,
                &ExploreParams {
                    no_share: true,
                    ..p.clone()
                },
            );
            assert_same_tree(&unshared, &reference, &format!("{what} no_share"));
            assert!(unshared.stats.tokens_computed > shared.stats.tokens_computed);
        }
    }
}

#[test]
fn one_branch_one_path_is_greedy_generation() {
    for t in [Tiny::gemma3(), Tiny::llama(), Tiny::gpt2()] {
        let (mut m, tok) = load(&t);
        let prompt = vec![2u32, 33, 8, 71];
        let p = ExploreParams {
            branches: 1,
            width: 1,
            steps: 20,
            ..Default::default()
        };
        let e = run(&mut m, &tok, &prompt, &p);
        let out = generate_batch(
            &mut m,
            &tok,
            vec![Request {
                overflow: Default::default(),
                prompt_ids: prompt.clone(),
                sampling: SamplingParams::default(),
                max_tokens: 20,
                stop_strings: Vec::new(),
                stop_ids: Vec::new(),
                n: 1,
                ignore_eos: false,
                min_tokens: 0,
                collapse: None,
                logit_bias: Vec::new(),
                constraint: None,
            }],
        )
        .unwrap();
        let greedy: Vec<u32> = out[0].tokens.iter().map(|t| t.id).collect();
        assert_eq!(e.paths.len(), 1, "{}", t.arch);
        assert_eq!(e.paths[0].token_ids, greedy, "{}", t.arch);
        for (node, info) in e.nodes.iter().skip(1).zip(&out[0].tokens) {
            assert!((node.logprob - info.logprob).abs() < 1e-4, "{}", t.arch);
        }
    }
}

fn without_timing(e: &Exploration) -> String {
    let mut v = serde_json::to_value(e).unwrap();
    v["stats"]["wall_ms"] = 0.into();
    v.to_string()
}

#[test]
fn same_seed_same_tree_and_stochastic_branching_depends_on_it() {
    let (mut m, tok) = load(&Tiny::gemma3());
    let prompt = [2u32, 9, 10, 11];
    for stochastic in [false, true] {
        let p = ExploreParams {
            branches: 3,
            width: 6,
            steps: 6,
            stochastic,
            temperature: 1.5,
            measure: Measure::Sample,
            seed: 11,
            ..Default::default()
        };
        let a = run(&mut m, &tok, &prompt, &p);
        let b = run(&mut m, &tok, &prompt, &p);
        assert_eq!(without_timing(&a), without_timing(&b));
        assert_eq!(a.measured.len(), 1);
    }
    let trees: std::collections::HashSet<String> = (0..6)
        .map(|seed| {
            let p = ExploreParams {
                stochastic: true,
                temperature: 1.5,
                seed,
                ..Default::default()
            };
            let e = run(&mut m, &tok, &prompt, &p);
            e.nodes
                .iter()
                .map(|n| format!("{:?}", n.token_id))
                .collect::<String>()
        })
        .collect();
    assert!(
        trees.len() > 1,
        "stochastic trees never changed with the seed"
    );
}

#[test]
fn forks_share_the_prompt_blocks_and_finished_paths_are_consistent() {
    let (mut m, tok) = load(&Tiny::llama());
    // 40 prompt tokens: two full KV blocks of 16 that every branch shares.
    let prompt: Vec<u32> = (0..40).map(|i| 2 + (i * 7) % 90).collect();
    let p = ExploreParams {
        branches: 3,
        width: 8,
        steps: 6,
        measure: Measure::All,
        ..Default::default()
    };
    let e = run(&mut m, &tok, &prompt, &p);
    assert!(
        e.stats.kv_blocks_used < e.stats.kv_blocks_unshared,
        "{:?}",
        e.stats
    );
    assert_eq!(
        e.stats.forward_passes,
        1 + e
            .nodes
            .iter()
            .filter(|n| n.next.is_some())
            .map(|n| n.depth)
            .max()
            .unwrap()
    );
    assert_eq!(e.measured.len(), e.paths.len());
    let mass: f64 = e.paths.iter().map(|p| p.probability).sum();
    assert!((mass - 1.0).abs() < 1e-9);
    for w in e.paths.windows(2) {
        assert!(w[0].normalized_score >= w[1].normalized_score);
    }
    for path in &e.paths {
        let n = &e.nodes[path.node];
        assert_eq!(n.status, Status::Finished);
        assert_eq!(path.token_ids.len(), n.depth);
        match path.finish_reason {
            FinishReason::Eos => assert_eq!(path.token_ids.last(), Some(&EOS)),
            FinishReason::Length => assert_eq!(n.depth, p.steps),
            FinishReason::Stop => unreachable!("no stop strings were given"),
        }
    }
    for n in &e.nodes {
        let gap_small = n
            .next
            .as_ref()
            .is_some_and(|d| d.top_gap < p.bifurcation_gap);
        assert_eq!(n.bifurcation, gap_small, "node {}", n.id);
        assert_eq!(e.bifurcations.contains(&n.id), gap_small);
    }
    let v = &e.verdict;
    assert_eq!(
        v.verdict == "confident",
        v.leading_mass >= 0.5 || v.agreement >= 0.75
    );
}

#[test]
fn length_normalisation_changes_the_ranking_key() {
    let (mut m, tok) = load(&Tiny::gemma3());
    let p = ExploreParams {
        alpha: 1.0,
        width: 6,
        steps: 5,
        ..Default::default()
    };
    let e = run(&mut m, &tok, &[2, 3, 4], &p);
    for path in &e.paths {
        let len = path.token_ids.len() as f64;
        assert!((path.normalized_score - path.score / len).abs() < 1e-12);
    }
}

#[test]
fn bad_parameters_are_refused_with_the_field_named() {
    let (mut m, tok) = load(&Tiny::gemma3());
    let cases = [
        (
            ExploreParams {
                branches: 0,
                ..Default::default()
            },
            "branches",
        ),
        (
            ExploreParams {
                width: 100_000,
                ..Default::default()
            },
            "width",
        ),
        (
            ExploreParams {
                steps: 0,
                ..Default::default()
            },
            "steps",
        ),
        (
            ExploreParams {
                temperature: 0.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            ExploreParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            ExploreParams {
                min_p: 1.5,
                ..Default::default()
            },
            "min_p",
        ),
        (
            ExploreParams {
                alpha: -1.0,
                ..Default::default()
            },
            "alpha",
        ),
        (
            ExploreParams {
                stop: vec![String::new()],
                ..Default::default()
            },
            "stop",
        ),
    ];
    for (p, field) in cases {
        let err = explore(&mut m, &tok, "", &[2, 3], &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    let err = explore(&mut m, &tok, "", &[], &ExploreParams::default()).unwrap_err();
    assert!(err.to_string().contains("empty"));
    let err = explore(&mut m, &tok, "", &[2, 5000], &ExploreParams::default()).unwrap_err();
    assert!(err.to_string().contains("5000"));
    // The model still works after refused requests.
    run(&mut m, &tok, &[2, 3], &ExploreParams::default());
}

#[test]
fn step_events_add_up_to_the_finished_tree() {
    use everett_engine::engine::{Engine, EngineConfig, Event, ExploreRequest, Task};
    let (m, tok) = load(&Tiny::llama());
    let mut engine = Engine::new(m, &tok, EngineConfig::for_seqs(32));
    let params = ExploreParams {
        steps: 5,
        width: 4,
        ..Default::default()
    };
    let req = ExploreRequest {
        prompt: String::new(),
        prompt_ids: vec![2, 40, 41],
        params,
        constraint: None,
    };
    let (_, mut events) = engine.submit(Task::Explore(req)).unwrap();
    engine.run_until_idle().unwrap();
    let mut seen: Vec<(usize, Option<u32>, Status)> = Vec::new();
    let mut depths = Vec::new();
    let result = loop {
        match events
            .try_recv()
            .expect("the exploration ends with a result")
        {
            Event::ExploreStep(s) => {
                depths.push(s.depth);
                assert!(!s.expanded.is_empty() && s.expanded.iter().all(|n| n.next.is_some()));
                for (list, status) in [
                    (&s.live, Status::Live),
                    (&s.pruned, Status::Pruned),
                    (&s.finished, Status::Finished),
                ] {
                    seen.extend(list.iter().map(|n| (n.id, n.token_id, status)));
                }
            }
            Event::Explored(x) => break x,
            other => panic!("unexpected event {other:?}"),
        }
    };
    assert_eq!(depths, (1..=depths.len()).collect::<Vec<_>>());
    seen.sort_by_key(|s| s.0);
    // Every node but the root came in a step, once, with its token; a node announced live may
    // end pruned (cut later), never the other way round.
    assert_eq!(seen.len(), result.nodes.len() - 1);
    for (s, n) in seen.iter().zip(&result.nodes[1..]) {
        assert_eq!((s.0, s.1), (n.id, n.token_id));
        assert!(
            s.2 == n.status || s.2 == Status::Live,
            "{s:?} vs {:?}",
            n.status
        );
    }
}
