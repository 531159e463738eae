#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test suite (models/ggml-vocab-*.gguf with their .inp/.out cases)
# and its chat templates (models/templates/*.jinja) into a cache outside the repository, from the
# llama.cpp source vendored in the llama-cpp-python sdist (the same pinned version as
# tools/llamacpp/build.sh). Idempotent. The engine's tokenizer suite reads the cache.
#   EVERETT_VOCAB_DIR   where to put them (default ~/.cache/everett/vocab)
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
DIR=${EVERETT_VOCAB_DIR:-$HOME/.cache/everett/vocab}
if [ -f "$DIR/.version" ] && [ "$(cat "$DIR/.version")" = "$VERSION" ]; then
  echo "vocab suite $VERSION already in $DIR"
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$VERSION" -d "$TMP"
ROOT="llama_cpp_python-$VERSION/vendor/llama.cpp/models"
tar xzf "$TMP/llama_cpp_python-$VERSION.tar.gz" -C "$TMP" --wildcards \
  "$ROOT/ggml-vocab-*" "$ROOT/templates/*"
mkdir -p "$DIR"
rm -rf "$DIR/templates"
cp "$TMP/$ROOT"/ggml-vocab-* "$DIR/"
cp -r "$TMP/$ROOT/templates" "$DIR/templates"
echo "$VERSION" > "$DIR/.version"
echo "vocab suite $VERSION in $DIR: $(ls "$DIR"/*.inp | wc -l) vocabularies with cases"
