"""LLM.chat, explore and collapse against the command line: the same template rendering, the
same exploration tree as `everett explore --json`, the same collapse run as `everett collapse
--json` (and the same tokens as greedy generation)."""

import json

from everett import Record, SamplingParams

MESSAGES = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_chat_renders_the_template(llm):
    # The default model's GGUF has no template: Gemma 3's turn format, the system message
    # folded into the first user turn, BOS added as a token.
    rendered = (
        "<start_of_turn>user\nYou answer in one short sentence.\n\n"
        "What is the capital of France?<end_of_turn>\n<start_of_turn>model\n"
    )
    p = SamplingParams(temperature=0, max_tokens=24)
    out = llm.chat(MESSAGES, p)
    assert len(out) == 1
    assert out[0].prompt == rendered
    assert out[0].prompt_token_ids[0] == 2
    # The turn markers are the vocabulary's control tokens (105, 106), not their spelling.
    ids = out[0].prompt_token_ids
    assert ids.count(105) == 2 and ids.count(106) == 1
    plain = rendered.replace("<start_of_turn>", "").replace("<end_of_turn>", "")
    assert llm.detokenize(ids) == plain
    # The answer is what generating from the same prompt tokens gives.
    again = llm.generate([out[0].prompt_token_ids], p)[0]
    assert out[0].outputs[0].token_ids == again.outputs[0].token_ids
    assert out[0].outputs[0].text.strip()


def test_chat_many_conversations(llm):
    other = [{"role": "user", "content": "Name a colour."}]
    p = SamplingParams(temperature=0, max_tokens=8)
    both = llm.chat([MESSAGES, other], p)
    assert [o.outputs[0].token_ids for o in both] == [
        llm.chat(MESSAGES, p)[0].outputs[0].token_ids,
        llm.chat(other, p)[0].outputs[0].token_ids,
    ]


def test_explore_equals_cli(llm, cli):
    prompt = "The best way to learn a language is"
    ref = json.loads(cli("explore", prompt, "--steps", "4", "--width", "5", "--branches", "3", "--json", "-"))
    got = llm.explore(prompt, steps=4, width=5, branches=3)
    assert isinstance(got, Record)
    d = got.to_dict()
    assert d.keys() == ref.keys()
    # Timing and the KV the prefix cache saved depend on the run; the tree does not.
    for key in ref:
        if key != "stats":
            assert d[key] == ref[key], key
    assert d["stats"]["forward_passes"] == ref["stats"]["forward_passes"]
    assert got["paths"] == ref["paths"] and "paths" in got and len(got) == len(ref)
    html = got.to_html()
    assert html.startswith("<!DOCTYPE html>") or html.lstrip().lower().startswith("<!doctype html>")
    assert json.loads(got.to_json())["nodes"] == ref["nodes"]


def test_collapse_equals_cli_and_greedy(llm, cli):
    prompt = "def quicksort(items):"
    ref = json.loads(cli("collapse", prompt, "--max-tokens", "48", "--json"))
    got = llm.collapse(prompt, max_tokens=48)
    for key in ["prompt_token_ids", "tokens", "text", "finish_reason", "forward_passes",
                "accepted_per_pass", "passes", "params"]:
        assert got[key] == ref[key], key
    greedy = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=48))[0].outputs[0]
    assert [t["id"] for t in got["tokens"]] == greedy.token_ids
    assert got["forward_passes"] < len(greedy.token_ids)
    assert "<html" in got.to_html().lower()
