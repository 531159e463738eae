//! The policies: what each kind of request does with its logit rows (generation, perplexity
//! scoring, superposition search, collapse decoding), each an implementation of
//! `request::policy::Policy`. `build` is the one place that names them: it validates a task
//! against the model's limits and makes its policy and first sequences. The engine calls it and
//! knows no policy by name.

pub(crate) mod collapse;
pub(crate) mod explore;
pub(crate) mod generate;
pub(crate) mod score;
mod validate;

use crate::error::{Error, Result};
use crate::overflow::Window;
use crate::request::policy::DynPolicy;
use crate::request::{Seq, Task};
use crate::tokenizer::Tokenizer;
pub(crate) use validate::Limits;

/// A task made ready to run.
pub(crate) struct Built {
    pub policy: Box<dyn DynPolicy>,
    pub seqs: Vec<Seq>,
    /// Whether its sequences read and feed the prefix cache.
    pub cacheable: bool,
    /// The window of a request that streams past the context.
    pub window: Option<Window>,
}

/// Validates `task` against `limits` and makes its policy; `tok` gives the end-of-generation
/// ids.
pub(crate) fn build(task: Task, tok: &Tokenizer, limits: &Limits) -> Result<Built> {
    let constraint = match &task {
        Task::Generate(r) => r.constraint.as_ref(),
        Task::Explore(r) => r.constraint.as_ref(),
        Task::Score(_) => None,
    };
    if let Some(g) = constraint.filter(|g| g.vocab() != tok.vocab_size()) {
        return Err(Error::InvalidRequest(format!(
            "the constraint was compiled for a vocabulary of {} tokens; this model's has {}",
            g.vocab(),
            tok.vocab_size()
        )));
    }
    Ok(match task {
        Task::Generate(r) if r.collapse.is_some() => {
            limits.generate(&r)?;
            let mut p = collapse::CollapsePolicy::new(r, &tok.eog, limits.context);
            let seqs = p.seqs();
            Built {
                policy: Box::new(p),
                seqs,
                cacheable: true,
                window: None,
            }
        }
        Task::Generate(r) => {
            let window = limits.generate(&r)?;
            let p = generate::GeneratePolicy::new(r, &tok.eog);
            let seqs = p.seqs();
            Built {
                policy: Box::new(p),
                seqs,
                cacheable: true,
                window,
            }
        }
        Task::Score(r) => {
            let window = limits.score(&r)?;
            Built {
                policy: Box::new(score::ScorePolicy::new(r.from)),
                seqs: vec![Seq::new(r.ids)],
                cacheable: true,
                window,
            }
        }
        Task::Explore(r) => {
            limits.explore(&r)?;
            let cacheable = !r.params.no_share;
            let p = explore::ExplorePolicy::new(r);
            let seqs = p.seqs();
            Built {
                policy: Box::new(p),
                seqs,
                cacheable,
                window: None,
            }
        }
    })
}
