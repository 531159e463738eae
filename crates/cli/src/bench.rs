//! `everett bench`: placeholder replaced below.
use crate::Common;
use anyhow::Result;
pub fn run(_c: &Common, _only: Option<&str>) -> Result<()> {
    anyhow::bail!("bench is not built yet")
}
