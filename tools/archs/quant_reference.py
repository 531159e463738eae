#!/usr/bin/env python3
"""Random blocks of every quantized type everett reads, with the values ggml's own C decoders
give for them (tools/archs/dequant_probe.cpp, built here against the llama.cpp of
tools/llamacpp/build.sh), written to tools/archs/reference/quant_blocks.json for
crates/engine/tests/quant_blocks.rs.
usage: python3 tools/archs/quant_reference.py   (needs numpy and the llama.cpp build)"""
import glob
import json
import os
import subprocess

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "reference", "quant_blocks.json")
LLAMA = os.environ.get("LLAMACPP_DIR", "/tmp/llamacpp")
# name: (ggml type id, block bytes, byte offsets of f16 scale fields: random bytes there could
# be NaN or huge).
TYPES = {
    "Q4_0": (2, 18, [0]), "Q4_1": (3, 20, [0, 2]), "Q5_0": (6, 22, [0]), "Q5_1": (7, 24, [0, 2]),
    "Q8_0": (8, 34, [0]), "Q2_K": (10, 84, [80, 82]), "Q3_K": (11, 110, [108]),
    "Q4_K": (12, 144, [0, 2]), "Q5_K": (13, 176, [0, 2]), "Q6_K": (14, 210, [208]),
    "IQ4_NL": (20, 18, [0]), "IQ4_XS": (23, 136, [0]), "TQ1_0": (34, 54, [52]),
    "TQ2_0": (35, 66, [64]), "MXFP4": (39, 17, []), "Q1_0": (41, 18, [0]), "Q2_0": (42, 18, [0]),
}


def probe():
    exe = os.path.join(LLAMA, "dequant_probe")
    if not os.path.exists(exe):
        src = glob.glob(os.path.join(LLAMA, "llama_cpp_python-*", "vendor", "llama.cpp"))[0]
        subprocess.run(["g++", "-O2", "-std=c++17", os.path.join(HERE, "dequant_probe.cpp"),
                        f"-I{src}/ggml/include", f"-L{src}/build/bin", "-lggml-base",
                        f"-Wl,-rpath,{src}/build/bin", "-o", exe], check=True)
    return exe


def main():
    exe = probe()
    rng = np.random.default_rng(2026)
    cases = []
    for name, (tid, size, halves) in TYPES.items():
        blocks = rng.integers(0, 256, size=(4, size), dtype=np.uint8)
        for b in blocks:
            for at in halves:
                half = np.float16(rng.uniform(-0.05, 0.05)).tobytes()
                b[at:at + 2] = np.frombuffer(half, np.uint8)
            if name == "MXFP4":
                b[0] = rng.integers(110, 140)
        hexed = blocks.tobytes().hex()
        out = subprocess.run([exe, str(tid), hexed], capture_output=True, text=True, check=True)
        values = [float(v) for v in out.stdout.split()]
        cases.append({"type": name, "hex": hexed, "values": values})
    with open(OUT, "w") as f:
        json.dump(cases, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(cases)} types -> {OUT}")


if __name__ == "__main__":
    main()
