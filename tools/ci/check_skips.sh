#!/usr/bin/env bash
# A test may skip for missing data only through the helpers in
# crates/engine/src/testutil (default_model, vocab_dir, chromium, page_dom, e2e_python,
# package_python), which
# fail instead when CI's EVERETT_REQUIRE_* variable says the data is required. This fails the
# build when a test returns early any other way, or prints its own "skipping".
set -euo pipefail
cd "$(dirname "$0")/../.."
helpers='(default_model|vocab_dir|chromium|page_dom|e2e_python|package_python)\('
bad=0
# Early returns of the form `let Some(x) = f() else { return };` must call a helper.
while IFS= read -r line; do
  if ! grep -Eq "= *${helpers}" <<<"$line"; then
    echo "early return without a required-data helper: $line"
    bad=1
  fi
done < <(grep -rnE 'else *\{ *return' crates/*/tests || true)
# Only the helpers may announce a skip.
while IFS= read -r line; do
  echo "skip outside crates/engine/src/testutil: $line"
  bad=1
done < <(grep -rnE '"skipping' crates tools --include=*.rs | grep -v '^crates/engine/src/testutil/' || true)
# A `return` right after a missing-file check is the same skip in another shape.
while IFS= read -r line; do
  echo "early return on a missing file: $line"
  bad=1
done < <(grep -rnE -A2 '!.*\.(exists|is_file|is_dir)\(\)' crates/*/tests | grep -E '^\S+-[0-9]+-\s*return' || true)
exit $bad
