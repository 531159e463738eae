#!/usr/bin/env bash
# The quantized KV cache (BENCHMARKS.md, "Quantization"): perplexity of the default model at
# ctx 512 and 2048 per --kv-type, with llama-perplexity's for the same cache types beside it
# (-ctk/-ctv; llama.cpp needs flash attention for a quantized V cache, so its rows use -fa on);
# then prefill and decode after 4k tokens of context (`everett bench --only depth4k`), and the
# KV bytes per token, which decide how many conversations a given memory holds.
# usage: tools/quantize/bench_kv.sh EVAL.txt [THREADS]   (after tools/llamacpp/build.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TEXT=${1:?usage: bench_kv.sh EVAL.txt [THREADS]}
T=${2:-2}
DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
BIN=$(ls -d "$DIR"/llama_cpp_python-*/vendor/llama.cpp/build/bin)
EV="$ROOT/target/release/everett"
M=$("$EV" pull 2>&1 | tail -1 | awk '{print $NF}')
ev_ppl() { "$EV" perplexity --model "$M" --file "$TEXT" --ctx "$1" --kv-type "$2" --threads "$T" --json 2>/dev/null | python3 -c "import json,sys; print('%.4f' % json.load(sys.stdin)['perplexity'])"; }
ll_ppl() { "$BIN/llama-perplexity" -m "$M" -f "$TEXT" -c "$1" -ctk "$2" -ctv "$2" -fa "$3" -t "$T" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
echo "| ctx | KV type | everett ppl | llama.cpp ppl (-fa off) | llama.cpp ppl (-fa on) |"
echo "|---|---|---|---|---|"
for c in 512 2048; do
  for k in f16 q8_0 q4_0; do
    off=$([ "$k" = f16 ] && ll_ppl "$c" "$k" off || echo "-")
    echo "| $c | $k | $(ev_ppl "$c" "$k") | $off | $(ll_ppl "$c" "$k" on) |"
  done
done
echo
echo "| KV type | pp512 at 0 tok/s | tg32 at 0 tok/s | pp512 at 4k tok/s | tg32 at 4k tok/s |"
echo "|---|---|---|---|---|"
for k in f16 q8_0 q4_0; do
  "$EV" bench --model "$M" --only depth4k --kv-type "$k" --threads "$T" --json 2>/dev/null | python3 -c "
import json,sys; d=json.load(sys.stdin)['depth']
print('| $k | %s | %s | %s | %s |' % (d['0']['pp512'], d['0']['tg32'], d['4096']['pp512'], d['4096']['tg32']))"
done
