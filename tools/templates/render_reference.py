#!/usr/bin/env python3
"""Renders every chat template of llama.cpp's models/templates (cached by tools/vocab/fetch.sh)
with Python's jinja2 as transformers' apply_chat_template does (sandboxed environment,
trim_blocks, lstrip_blocks, loop controls, its tojson, raise_exception, strftime_now) for the
conversations in conversations.json, and writes the texts (or that rendering raised) to
reference.json, which crates/server/tests/templates.rs compares everett's renderer against.
strftime_now reads a fixed clock, 2026-01-15 09:30:00 (everett's tests use the same).
usage: python3 tools/templates/render_reference.py   (needs jinja2)"""
import datetime
import glob
import json
import os

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = os.environ.get("EVERETT_VOCAB_DIR", os.path.expanduser("~/.cache/everett/vocab"))
NOW = datetime.datetime(2026, 1, 15, 9, 30, 0)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: NOW.strftime(fmt)
    return env


def main():
    with open(os.path.join(HERE, "conversations.json")) as f:
        conversations = json.load(f)
    out = {}
    env = environment()
    for path in sorted(glob.glob(os.path.join(VOCAB, "templates", "*.jinja"))):
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            source = f.read()
        try:
            template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            out[name] = {"compile_error": str(e)}
            continue
        results = {}
        for conv, body in conversations.items():
            ctx = dict(body, bos_token="<s>", eos_token="</s>")
            try:
                results[conv] = {"text": template.render(**ctx)}
            except Exception as e:  # a template may refuse a conversation (raise_exception)
                results[conv] = {"error": f"{type(e).__name__}: {e}"}
        out[name] = results
    with open(os.path.join(HERE, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    ok = sum(1 for r in out.values() for v in r.values() if isinstance(v, dict) and "text" in v)
    print(f"{len(out)} templates, {ok} renderings")


if __name__ == "__main__":
    main()
