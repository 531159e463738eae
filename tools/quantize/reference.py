#!/usr/bin/env python3
"""Quantizes the models of crates/engine/src/testutil (quant_models, written by the quantgen
example) with llama-quantize into every file type everett offers, then again with their made-up
importance matrices (quant_imatrix) into every type that takes one, and writes each output's
sha256 and size to tools/quantize/reference.json, which crates/engine/tests/quantize.rs
compares `everett quantize`'s output against (the test rebuilds the same input bytes).

  reference.py            regenerate the reference (needs tools/llamacpp/build.sh first)

Environment: LLAMACPP_DIR (as build.sh). Not used by the tests or CI.
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LLAMA = os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")
WEIGHTED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
            "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS"]
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S",
         "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS"]


def main():
    quantize = glob.glob(os.path.join(LLAMA, "llama_cpp_python-*", "vendor", "llama.cpp",
                                      "build", "bin", "llama-quantize"))
    if not quantize:
        raise SystemExit("llama-quantize is not built: run tools/llamacpp/build.sh")
    work = tempfile.mkdtemp()
    models = subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "everett-engine", "--example", "quantgen",
         "--", work], check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
    out = {}
    for model in models:
        name = os.path.basename(model).split(".")[0]
        imatrix = os.path.join(work, f"{name}.imatrix.gguf")
        runs = [(t, t, []) for t in TYPES]
        # The test passes the imatrix by this name, which the file records.
        runs += [(t + "+imatrix", t, ["--imatrix", "imatrix.gguf"]) for t in WEIGHTED]
        shutil.copyfile(imatrix, os.path.join(work, "imatrix.gguf"))
        out[name] = {}
        for key, t, extra in runs:
            dst = os.path.join(work, f"{name}.{t}.gguf")
            subprocess.run([quantize[0], *extra, model, dst, t, "2"], check=True,
                           capture_output=True, cwd=work)
            with open(dst, "rb") as f:
                data = f.read()
            out[name][key] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            os.remove(dst)
            print(name, key, out[name][key]["sha256"][:16])
    path = os.path.join(ROOT, "tools", "quantize", "reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
