#!/usr/bin/env bash
# Perplexity of the default model re-quantized from its F16 dequantization, per file type, with
# and without an importance matrix made from a different text, measured by everett and by
# llama-perplexity on the same files (BENCHMARKS.md, "Quantization").
#   calibration: Python 3.11's tutorial (first 60 000 bytes; python3-doc)
#   evaluation:  Python 3.11's FAQ (first 120 000 bytes)
# usage: tools/quantize/bench_ppl.sh WORKDIR [THREADS]   (after tools/llamacpp/build.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=${1:?usage: bench_ppl.sh WORKDIR [THREADS]}
T=${2:-2}
DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
BIN=$(ls -d "$DIR"/llama_cpp_python-*/vendor/llama.cpp/build/bin)
EV="$ROOT/target/release/everett"
SRC=/usr/share/doc/python3.11/html/_sources
[ -d "$SRC" ] || "$ROOT/tools/long_context/make_text.sh" "$W/text" >/dev/null
mkdir -p "$W" && cd "$W"
# (head closing the pipe early would fail the script under pipefail: whole files first)
cat "$SRC"/tutorial/*.rst.txt > tutorial.txt && head -c 60000 tutorial.txt > calib.txt
cat "$SRC"/faq/*.rst.txt > faq.txt && head -c 120000 faq.txt > eval.txt
MODEL=$("$EV" pull 2>&1 | tail -1 | awk '{print $NF}')
[ -f f16.gguf ] || "$EV" quantize --allow-requantize "${MODEL:-$HOME/.cache/everett/models/gemma-3-270m-q4_k_m.gguf}" f16.gguf --type F16 >/dev/null
[ -f imatrix.gguf ] || "$EV" imatrix --model f16.gguf --file calib.txt -o imatrix.gguf --threads "$T" 2>/dev/null
ev_ppl() { "$EV" perplexity --model "$1" --file eval.txt --threads "$T" --json 2>/dev/null | python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['perplexity'])"; }
ll_ppl() { "$BIN/llama-perplexity" -m "$1" -f eval.txt -c 512 -t "$T" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
echo "| file | imatrix | size MiB | everett ppl | llama.cpp ppl |"
echo "|---|---|---|---|---|"
echo "| F16 | - | $(( $(stat -c %s f16.gguf) >> 20 )) | $(ev_ppl f16.gguf) | $(ll_ppl f16.gguf) |"
for t in Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K; do
  for im in no yes; do
    extra=(); [ $im = yes ] && extra=(--imatrix imatrix.gguf)
    "$EV" quantize "${extra[@]}" f16.gguf "$t.$im.gguf" --type "$t" --threads "$T" >/dev/null
    echo "| $t | $im | $(( $(stat -c %s "$t.$im.gguf") >> 20 )) | $(ev_ppl "$t.$im.gguf") | $(ll_ppl "$t.$im.gguf") |"
  done
done
