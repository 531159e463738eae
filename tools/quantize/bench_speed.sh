#!/usr/bin/env bash
# Quantization time, everett against llama-quantize on the same F16 input and threads,
# interleaved, median of ROUNDS (BENCHMARKS.md, "Quantization"). Each pair's outputs are
# compared byte for byte. everett's time includes its error report (it dequantizes every
# converted tensor again to measure RMSE and the largest error).
# usage: tools/quantize/bench_speed.sh F16.gguf [THREADS] [ROUNDS]   (after tools/llamacpp/build.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IN=${1:?usage: bench_speed.sh F16.gguf [THREADS] [ROUNDS]}
T=${2:-2}
R=${3:-3}
DIR=${LLAMACPP_DIR:-/tmp/llamacpp}
LQ=$(ls "$DIR"/llama_cpp_python-*/vendor/llama.cpp/build/bin/llama-quantize)
EV="$ROOT/target/release/everett"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
secs() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| type | llama-quantize s | everett s | everett / llama | same bytes |"
echo "|---|---|---|---|---|"
for t in ${TYPES:-Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K IQ4_NL IQ4_XS}; do
  l=(); e=()
  for _ in $(seq "$R"); do
    l+=("$(secs "$LQ" "$IN" "$W/l.gguf" "$t" "$T")")
    e+=("$(secs "$EV" quantize "$IN" "$W/e.gguf" --type "$t" --threads "$T")")
  done
  same=$(cmp -s "$W/l.gguf" "$W/e.gguf" && echo yes || echo NO)
  lm=$(median "${l[@]}"); em=$(median "${e[@]}")
  printf '| %s | %.2f | %.2f | %.2f× | %s |\n' "$t" "$lm" "$em" "$(echo "$em / $lm" | bc -l)" "$same"
done
