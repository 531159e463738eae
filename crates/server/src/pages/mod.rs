//! The offline pages that `everett explore --html` and `everett collapse --html` write, and the
//! style and tree-drawing script that the served page (`GET /`) shares with them. Presentation
//! lives here, beside the server's own page, not in the engine.

pub mod collapse;
pub mod explore;
