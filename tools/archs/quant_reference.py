#!/usr/bin/env python3
"""Random blocks of every quantized type that llama.cpp's gguf-py can decode, with gguf-py's
dequantized values (gguf-py mirrors GGML's C decoders), written to
tools/archs/reference/quant_blocks.json for crates/engine/tests/quant_blocks.rs.
usage: PYTHONPATH=<llama.cpp>/gguf-py python3 tools/archs/quant_reference.py (needs numpy)"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "quant_blocks.json")
# Byte offsets of each type's f16 scale fields (random bytes there could be NaN or huge).
HALVES = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0], "TQ1_0": [52], "TQ2_0": [64], "MXFP4": [],
}


def main():
    rng = np.random.default_rng(2026)
    cases = []
    for name, halves in HALVES.items():
        qtype = T[name]
        _, size = GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(4, size), dtype=np.uint8)
        for b in blocks:
            for at in halves:
                b[at:at + 2] = np.frombuffer(np.float16(rng.uniform(-0.05, 0.05)).tobytes(), np.uint8)
            if name == "MXFP4":
                b[0] = rng.integers(110, 140)
        values = dequantize(blocks.reshape(-1), qtype).astype(np.float32).reshape(-1)
        cases.append({"type": name, "hex": blocks.tobytes().hex(), "values": values.tolist()})
    with open(OUT, "w") as f:
        json.dump(cases, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(cases)} types -> {OUT}")


if __name__ == "__main__":
    main()
