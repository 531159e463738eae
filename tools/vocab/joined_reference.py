#!/usr/bin/env python3
"""llama.cpp's tokens for the joined text of its tokenizer suite: every case of every vocabulary
(`.inp` files in sorted order, the separators made newlines), tokenized by llama-tokenize for
each of the 15 vocabularies with cases (no BOS, special text not parsed, escapes not processed).
Writes the id count and the sha256 of the comma-joined ids per vocabulary to
tools/vocab/joined_reference.json, which crates/engine/tests/tokenizer_suite.rs checks.
Needs tools/vocab/fetch.sh and tools/llamacpp/build.sh first."""
import glob
import hashlib
import json
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = os.environ.get("EVERETT_VOCAB_DIR", os.path.expanduser("~/.cache/everett/vocab"))
LLAMA = os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")


def joined_text():
    parts = []
    for f in sorted(glob.glob(os.path.join(VOCAB, "*.inp"))):
        with open(f, encoding="utf-8") as fh:
            parts.append(fh.read().replace("\n__ggml_vocab_test__\n", "\n"))
    return "".join(parts)


def main():
    tool = glob.glob(os.path.join(LLAMA, "llama_cpp_python-*/vendor/llama.cpp/build/bin/llama-tokenize"))[0]
    text = joined_text()
    out = {"bytes": len(text.encode()), "vocabularies": {}}
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write(text)
    for inp in sorted(glob.glob(os.path.join(VOCAB, "*.inp"))):
        name = os.path.basename(inp)[len("ggml-vocab-"):-len(".gguf.inp")]
        ids = subprocess.run([tool, "-m", inp[:-4], "-f", f.name, "--ids", "--log-disable",
                              "--no-bos", "--no-parse-special", "--no-escape"],
                             capture_output=True, text=True, check=True).stdout.strip()
        ids = [int(x) for x in ids.strip("[]").split(",") if x.strip()]
        digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
        out["vocabularies"][name] = {"ids": len(ids), "sha256": digest}
        print(f"{name:15} {len(ids):6} ids")
    os.unlink(f.name)
    with open(os.path.join(HERE, "joined_reference.json"), "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
