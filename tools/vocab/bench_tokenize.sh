#!/usr/bin/env bash
# Tokenizer throughput, everett against llama-tokenize, on a 1 MB mixed text: the cases of
# llama.cpp's tokenizer suite (15 vocabularies' worth of languages, code, emoji and whitespace)
# repeated to 1 000 000 bytes. Each tool runs on the 1 MB file and on a one-byte file,
# interleaved, 5 times; the medians' difference is the tokenization time (load time cancels).
# Both: no BOS, special text not parsed, no escape processing; the ids are compared too.
# usage: tools/vocab/bench_tokenize.sh [VOCAB...]   (default: llama-bpe qwen2 llama-spm gemma-4 bert-bge)
# Needs tools/vocab/fetch.sh, tools/llamacpp/build.sh and `cargo build --release`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VOCAB=${EVERETT_VOCAB_DIR:-$HOME/.cache/everett/vocab}
LT=$(ls "${LLAMACPP_DIR:-/tmp/llamacpp}"/llama_cpp_python-*/vendor/llama.cpp/build/bin/llama-tokenize)
EV="$ROOT/target/release/everett"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 - "$VOCAB" "$TMP/big.txt" <<'PY'
import glob, sys
parts = [open(f, encoding="utf-8").read().replace("\n__ggml_vocab_test__\n", "\n")
         for f in sorted(glob.glob(sys.argv[1] + "/*.inp"))]
blob = "".join(parts).encode()
data = (blob * (1 + 1_000_000 // len(blob)))[:1_000_000].decode("utf-8", "ignore")
open(sys.argv[2], "w", encoding="utf-8").write(data)
PY
printf 'x' > "$TMP/tiny.txt"
secs() { local s e; s=$(date +%s.%N); "$@" > "$TMP/out" 2>/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| vocabulary | llama.cpp s | everett s | llama.cpp MB/s | everett MB/s | everett / llama.cpp | same ids |"
echo "|---|---|---|---|---|---|---|"
for v in "${@:-llama-bpe qwen2 llama-spm gemma-4 bert-bge}"; do
  for v1 in $v; do
    m="$VOCAB/ggml-vocab-$v1.gguf"
    llama() { "$LT" -m "$m" -f "$1" --ids --log-disable --no-bos --no-parse-special --no-escape; }
    ev() { "$EV" tokenize --model "$m" --file "$1" --ids; }
    : > "$TMP/l" ; : > "$TMP/e"
    for i in 1 2 3 4 5; do
      echo "$(secs llama "$TMP/big.txt") $(secs llama "$TMP/tiny.txt")" >> "$TMP/l"
      echo "$(secs ev "$TMP/big.txt") $(secs ev "$TMP/tiny.txt")" >> "$TMP/e"
    done
    lt=$(awk '{print $1 - $2}' "$TMP/l" | median); et=$(awk '{print $1 - $2}' "$TMP/e" | median)
    llama "$TMP/big.txt" > "$TMP/ids.l" 2>/dev/null; ev "$TMP/big.txt" > "$TMP/ids.e"
    same=$(python3 -c "import json,ast,sys; print('yes' if ast.literal_eval(open('$TMP/ids.l').read().strip()) == json.load(open('$TMP/ids.e')) else 'NO')")
    printf '| %s | %.3f | %.3f | %.2f | %.2f | %.2f× | %s |\n' "$v1" "$lt" "$et" \
      "$(echo "1 / $lt" | bc -l)" "$(echo "1 / $et" | bc -l)" "$(echo "$lt / $et" | bc -l)" "$same"
  done
done
