//! The Python package's tests (`crates/python/tests`, pytest) against the installed wheel, with
//! this build's `everett` binary as the reference its outputs must equal. They need
//! EVERETT_PY_PYTHON, an interpreter in whose environment the wheel and pytest are installed
//! (`.ci/run` builds the wheel with maturin into a fresh virtualenv), and the default model;
//! without them they are skipped, unless EVERETT_REQUIRE_PY / EVERETT_REQUIRE_MODEL is set.

use everett_engine::testutil::{default_model, package_python};
use std::path::Path;
use std::process::Command;

#[test]
fn python_package_tests_pass() {
    let Some(_model) = default_model() else {
        return;
    };
    let Some(python) = package_python() else {
        return;
    };
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/tests");
    let status = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .current_dir(&tests)
        .env("EVERETT_BIN", env!("CARGO_BIN_EXE_everett"))
        .status()
        .expect("running pytest");
    assert!(
        status.success(),
        "the Python package's tests failed (pytest output above)"
    );
}
