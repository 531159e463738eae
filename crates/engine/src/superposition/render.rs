//! The terminal rendering, in the seed's style (`|-- [-2.45] ' to'`): one line per node,
//! children under their parent best-first, probability shown by color when `color` is set,
//! bifurcation points and finished/pruned nodes marked, then the measured answer(s) and the
//! verdict. It writes a String and does not decide where it goes.

use super::{Exploration, Node, Status};
use std::fmt::Write;

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";

/// Color for a probability: green when likely, yellow when plausible, red when a long shot.
fn shade(p: f32) -> &'static str {
    if p >= 0.5 {
        "\x1b[32m"
    } else if p >= 0.1 {
        "\x1b[33m"
    } else {
        "\x1b[31m"
    }
}

/// Escapes a token so that the tree stays on one line per node.
fn visible(text: &str) -> String {
    text.chars().flat_map(char::escape_default).collect()
}

pub fn report(e: &Exploration, color: bool) -> String {
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); e.nodes.len()];
    for n in &e.nodes {
        if let Some(p) = n.parent {
            children[p].push(n.id);
        }
    }
    for kids in children.iter_mut() {
        kids.sort_by_key(|&id| (e.nodes[id].rank, id));
    }
    let measured: Vec<usize> = e.measured.iter().map(|&i| e.paths[i].node).collect();
    let on_measured = on_paths(e, &measured);
    let mut out = String::new();
    // Depth-first with an explicit stack: (node, indent prefix).
    let mut stack = vec![(0usize, String::new())];
    while let Some((id, prefix)) = stack.pop() {
        let n = &e.nodes[id];
        line(&mut out, n, &prefix, e, color, on_measured[id]);
        let child_prefix = if id == 0 {
            "    ".to_string()
        } else {
            format!("{prefix}|    ")
        };
        for &c in children[id].iter().rev() {
            stack.push((c, child_prefix.clone()));
        }
    }
    out.push('\n');
    summary(&mut out, e, color);
    out
}

fn line(out: &mut String, n: &Node, prefix: &str, e: &Exploration, color: bool, measured: bool) {
    let text = if n.id == 0 { &e.prompt } else { &n.text };
    let body = format!("[{:.2}] '{}'", n.score, visible(text));
    let mut marks = String::new();
    if let Some(r) = n.finish_reason {
        let _ = write!(marks, " [{}]", r.as_str());
    }
    if n.status == Status::Pruned {
        marks.push_str(" (pruned)");
    }
    if measured {
        marks.push_str(" *");
    }
    if n.bifurcation {
        let gap = n.next.as_ref().map_or(0.0, |d| d.top_gap);
        let _ = write!(marks, "  <- bifurcation (p1-p2 {gap:.3})");
    }
    if !color {
        let _ = writeln!(out, "{prefix}|-- {body}{marks}");
        return;
    }
    let style = if n.status == Status::Pruned {
        DIM.to_string()
    } else if n.id == 0 {
        BOLD.to_string()
    } else {
        let bold = if measured { BOLD } else { "" };
        format!("{bold}{}", shade(n.logprob.exp()))
    };
    let _ = writeln!(out, "{prefix}|-- {style}{body}{RESET}{marks}");
}

/// For every node: whether it lies on one of the paths ending at `ends`.
fn on_paths(e: &Exploration, ends: &[usize]) -> Vec<bool> {
    let mut on = vec![false; e.nodes.len()];
    for &end in ends {
        let mut at = Some(end);
        while let Some(id) = at {
            on[id] = true;
            at = e.nodes[id].parent;
        }
    }
    on
}

fn summary(out: &mut String, e: &Exploration, color: bool) {
    let (b, r) = if color { (BOLD, RESET) } else { ("", "") };
    let _ = writeln!(out, "{b}measured ({}):{r}", e.params.measure.as_str());
    for &i in &e.measured {
        let p = &e.paths[i];
        let _ = writeln!(
            out,
            "  [{:.2}] p={:.3} {:?}",
            p.normalized_score, p.probability, p.text
        );
    }
    let v = &e.verdict;
    let _ = writeln!(
        out,
        "{b}verdict: {}{r} (leading path mass {:.2}, agreement {:.2}, common prefix {:?} over {} paths)",
        v.verdict, v.leading_mass, v.agreement, v.common_prefix_text, v.paths_compared
    );
    let _ = writeln!(
        out,
        "bifurcations: {}   finished paths: {}   nodes: {}",
        e.bifurcations.len(),
        e.paths.len(),
        e.nodes.len()
    );
    let s = &e.stats;
    let _ = writeln!(
        out,
        "{} forward passes, {} rows, KV blocks {} used vs {} unshared, {:.0} ms",
        s.forward_passes, s.tokens_computed, s.kv_blocks_used, s.kv_blocks_unshared, s.wall_ms
    );
}
