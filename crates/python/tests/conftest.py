"""Fixtures for the Python package's tests: one LLM over the default model for the whole run,
and the command line (`everett`, path in EVERETT_BIN) as the reference the package must match.
Nothing here skips: a missing binary or model fails the run (the README's test command runs
these through `crates/cli/tests/python.rs`, which says what to install)."""

import json
import os
import struct
import subprocess

import pytest

import everett


def f32(x):
    """x rounded to the f32 the engine computed (JSON and Python floats are f64)."""
    return struct.unpack("f", struct.pack("f", x))[0]


@pytest.fixture(scope="session")
def everett_bin():
    path = os.environ.get("EVERETT_BIN")
    assert path and os.path.isfile(path), "EVERETT_BIN must name the everett binary"
    return path


@pytest.fixture(scope="session")
def llm():
    llm = everett.LLM(kv_tokens=8192)
    yield llm
    llm.close()


@pytest.fixture(scope="session")
def cli(everett_bin, llm):
    """Runs `everett ARGS... --model <the LLM's model>` and returns its stdout."""

    def run(*args, stdin=None):
        out = subprocess.run(
            [everett_bin, *args, "--model", str(llm.model_path)],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    return run


@pytest.fixture(scope="session")
def cli_generate(cli, tmp_path_factory):
    """`everett generate --json` over `prompts`: one dict per sample."""

    def run(prompts, *flags):
        path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
        path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        out = cli("generate", "--json", "--prompts-file", str(path), *flags)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    return run
