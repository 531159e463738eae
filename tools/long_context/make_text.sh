#!/usr/bin/env bash
# The long texts of the long-context measurements: Python 3.11's tutorial, HOWTOs and FAQ (the
# reST sources shipped by Debian's python3-doc package), concatenated in file-name order.
#   text100k.txt: the first 378 000 bytes, 99 334 tokens for Gemma 3 (BOS not counted) (perplexity, streamed)
#   text.txt:     all of it (the needle test takes its first 30 000 tokens)
# usage: tools/long_context/make_text.sh OUTDIR   (installs python3-doc when it is missing)
set -euo pipefail
out=${1:?usage: make_text.sh OUTDIR}
src=/usr/share/doc/python3.11/html/_sources
if [ ! -d "$src" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-doc >/dev/null
fi
mkdir -p "$out"
cat "$src"/tutorial/*.rst.txt "$src"/howto/*.rst.txt "$src"/faq/*.rst.txt > "$out/text.txt"
head -c 378000 "$out/text.txt" > "$out/text100k.txt"
