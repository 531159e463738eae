#!/usr/bin/env bash
# Builds llama.cpp (the source vendored in the llama-cpp-python sdist on PyPI, the only registry
# reachable here) into $LLAMACPP_DIR (default /tmp/llamacpp), CPU only, plus `probe`, for the
# comparisons in compare.py. Not used by the tests or CI. AMX is left out: this VM lists the
# AMX flags but traps on the instructions.
set -euo pipefail
DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$DIR" && cd "$DIR"
if [ ! -d "llama_cpp_python-$VERSION" ]; then
  # The index's JSON lists every release; its file URLs may be relative to the JSON's own.
  INDEX=https://pypi.org/pypi/llama-cpp-python/json
  URL=$(curl -sf "$INDEX" | python3 -c '
import json, sys, urllib.parse
files = json.load(sys.stdin)["releases"][sys.argv[2]]
print(urllib.parse.urljoin(sys.argv[1], next(f["url"] for f in files if f["packagetype"] == "sdist")))
' "$INDEX" "$VERSION")
  curl -sfL -o sdist.tar.gz "$URL"
  tar xzf sdist.tar.gz
fi
SRC="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
command -v cmake >/dev/null || python3 -m pip install -q cmake
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build "$SRC/build" -j2 --target llama-perplexity llama-bench
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
g++ -O2 -std=c++17 "$HERE/probe.cpp" -I"$SRC/include" -I"$SRC/ggml/include" -L"$SRC/build/bin" \
  -lllama -lggml -lggml-base -Wl,-rpath,"$SRC/build/bin" -o "$DIR/probe"
echo "built: $SRC/build/bin and $DIR/probe"
