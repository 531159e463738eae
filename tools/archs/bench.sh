#!/usr/bin/env bash
# Prefill and decode speed of every architecture's random-weight model (Q8_0; the files
# compare.py writes into $LLAMACPP_DIR/archs), everett against llama.cpp in the same run, same
# threads: `everett bench --only pp128|tg128` against `llama-bench -p 128 -n 128 -fa 0`, and for
# the mixtures of experts decode of 32 sequences (`--only parallel`) against
# `llama-batched-bench -npp 128 -ntg 64 -npl 32` (its S_TG). These models are tiny (width 128),
# so the figures measure per-token overheads more than kernels.
# usage: tools/archs/bench.sh [THREADS]   (after tools/llamacpp/build.sh and compare.py)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
T=${1:-2}
DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
BIN=$(ls -d "$DIR"/llama_cpp_python-*/vendor/llama.cpp/build/bin)
EV="$ROOT/target/release/everett"
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
echo "| architecture | everett pp128 tok/s | llama.cpp pp128 | ratio | everett tg128 tok/s | llama.cpp tg128 | ratio |"
echo "|---|---|---|---|---|---|---|"
for a in llama llama31 mixtral qwen2 qwen3 qwen3yarn qwen2moe qwen3moe phi3 gemma2 gemma3; do
  m="$DIR/archs/$a.q8_0.gguf"
  lb=$("$BIN/llama-bench" -m "$m" -t "$T" -p 128 -n 128 -fa 0 -r 3 -o json 2>/dev/null)
  lpp=$(echo "$lb" | python3 -c "import json,sys; print([r['avg_ts'] for r in json.load(sys.stdin) if r['n_prompt']][0])")
  ltg=$(echo "$lb" | python3 -c "import json,sys; print([r['avg_ts'] for r in json.load(sys.stdin) if r['n_gen']][0])")
  epp=$("$EV" bench --model "$m" --threads "$T" --json --only pp128 2>/dev/null | field "['pp128']")
  etg=$("$EV" bench --model "$m" --threads "$T" --json --only tg128 2>/dev/null | field "['tg128']")
  printf '| %s | %.0f | %.0f | %.2f× | %.0f | %.0f | %.2f× |\n' "$a" "$epp" "$lpp" \
    "$(echo "$epp / $lpp" | bc -l)" "$etg" "$ltg" "$(echo "$etg / $ltg" | bc -l)"
done
echo
echo "| mixture of experts | everett decode, 32 sequences, tok/s | llama.cpp S_TG | ratio |"
echo "|---|---|---|---|"
for a in mixtral qwen2moe qwen3moe; do
  m="$DIR/archs/$a.q8_0.gguf"
  l=$("$BIN/llama-batched-bench" -m "$m" -c 8192 -b 2048 -ub 512 -npp 128 -ntg 64 -npl 32 -t "$T" \
      -fa 0 --output-format jsonl 2>/dev/null | grep speed_tg | tail -1 | field "['speed_tg']")
  e=$("$EV" bench --model "$m" --threads "$T" --json --only parallel 2>/dev/null | field "['parallel']['32']")
  printf '| %s | %.0f | %.0f | %.2f× |\n' "$a" "$e" "$l" "$(echo "$e / $l" | bc -l)"
done
