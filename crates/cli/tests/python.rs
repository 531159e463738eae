//! The Python package's tests (`crates/python/tests`, pytest) against the installed wheel, with
//! this build's `everett` binary as the reference its outputs must equal, and the Ray scale-out
//! tests (`crates/python/tests_ray`: a two-node Ray cluster on this machine). They need
//! EVERETT_PY_PYTHON, an interpreter in whose environment the wheel (with its `ray` extra),
//! pytest and `openai` are installed (`.ci/run` builds the wheel into a fresh virtualenv), and
//! the default model; without them they are skipped, unless EVERETT_REQUIRE_PY /
//! EVERETT_REQUIRE_MODEL is set.

use everett_engine::testutil::{default_model, package_python};
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

/// Runs pytest on `dir` (under crates/python) with `python`; fails the test on a failure.
fn pytest(python: OsString, dir: &str) {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../python")
        .join(dir);
    let status = Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
        ])
        .arg(&tests)
        .current_dir(&tests)
        .env("EVERETT_BIN", env!("CARGO_BIN_EXE_everett"))
        .env("RAY_USAGE_STATS_ENABLED", "0")
        .status()
        .expect("running pytest");
    assert!(
        status.success(),
        "pytest {dir} failed (its output is above)"
    );
}

/// One test, so that the two suites run one after the other (the Ray cluster and the timing
/// checks of the first would share the cores otherwise).
#[test]
fn python_package_and_ray_tests_pass() {
    let Some(_model) = default_model() else {
        return;
    };
    let Some(python) = package_python() else {
        return;
    };
    pytest(python.clone(), "tests");
    pytest(python, "tests_ray");
}
