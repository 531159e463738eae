#!/usr/bin/env bash
# Builds llama.cpp (the source vendored in the llama-cpp-python sdist on PyPI, the only registry
# reachable here, fetched with `pip download`) into $LLAMACPP_DIR (default /tmp/llamacpp), CPU
# only, for this machine's instruction set: llama-perplexity, llama-bench, llama-server, llama-tokenize and
# llama-batched-bench, llama-quantize and llama-imatrix, plus `probe`, for the comparisons in compare.py and the serving
# benchmarks. Not used by the tests or CI. AMX is left out: one VM kind lists the AMX flags but
# traps on the instructions.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$DIR" && cd "$DIR"
if [ ! -d "llama_cpp_python-$VERSION" ]; then
  python3 -m pip download -q --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$DIR"
  tar xzf "$DIR/llama_cpp_python-$VERSION.tar.gz"
fi
SRC="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
command -v cmake >/dev/null || python3 -m pip install -q cmake
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON >/dev/null
cmake --build "$SRC/build" -j2 --target llama-perplexity llama-bench llama-server llama-tokenize \
  llama-batched-bench llama-quantize llama-imatrix
g++ -O2 -std=c++17 "$HERE/probe.cpp" -I"$SRC/include" -I"$SRC/ggml/include" -L"$SRC/build/bin" \
  -lllama -lggml -lggml-base -Wl,-rpath,"$SRC/build/bin" -o "$DIR/probe"
echo "built: $SRC/build/bin and $DIR/probe"
