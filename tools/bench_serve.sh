#!/usr/bin/env bash
# Serving benchmark, everett against llama-server on this machine, interleaved: for each round
# and each server in turn, start it, run `everett bench serve` at each concurrency (greedy,
# ignore_eos, 64 tokens per request, the built-in prompts), stop it. Prints one JSON object per
# run, tagged with the server and the round. llama-server runs as the issue's anchor:
# `-t 2 -c 8192 --parallel 32`. Build llama.cpp first with tools/llamacpp/build.sh.
#   tools/bench_serve.sh [ROUNDS] > results.jsonl
set -euo pipefail
ROUNDS=${1:-2}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EVERETT=${EVERETT:-$HERE/target/release/everett}
MODEL=${MODEL:-${EVERETT_HOME:-$HOME/.cache/everett/models}/gemma-3-270m-q4_k_m.gguf}
LLAMA=${LLAMA_SERVER:-/tmp/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server}
PORT=${PORT:-8181}

wait_ready() {
  for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$PORT/health")" = 200 ] && return
    sleep 0.5
  done
  echo "server on $PORT never became ready" >&2
  exit 1
}

run_server() {
  local name=$1 round=$2 pid
  case $name in
    everett) "$EVERETT" serve --model "$MODEL" --port "$PORT" --threads 2 2>/dev/null & ;;
    llama-server) "$LLAMA" -m "$MODEL" -t 2 -c 8192 --parallel 32 --port "$PORT" >/dev/null 2>&1 & ;;
  esac
  pid=$!
  wait_ready
  for c in 1 8 32 64; do
    local n=$(( c < 8 ? 8 : (c < 16 ? 16 : c) ))
    "$EVERETT" bench serve --url "127.0.0.1:$PORT" --requests "$n" --concurrency "$c" \
      --max-tokens 64 --json | python3 -c "import json,sys; r=json.load(sys.stdin); \
r.update(server='$name', round=$round); print(json.dumps(r))"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="everett llama-server"; else order="llama-server everett"; fi
  for s in $order; do run_server "$s" "$round"; done
done
