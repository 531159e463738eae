#!/usr/bin/env python3
"""End-to-end checks of a running `everett serve`, as its users would make them.

* the official `openai` package: models, completions, chat, streaming, n=2, logprobs, bad requests;
* structured outputs through the same client: `response_format` json_schema (nested objects,
  arrays, enums, required fields) at temperature 1 over many seeds, each reply validated by
  `jsonschema`, streamed and not; a broken schema is a 400;
* tool calling through the same client: `tool_choice` required, a named function and auto, over
  many seeds at temperature 1, streamed and not; every call names an offered tool and its
  arguments validate against the tool's parameters; the call and its result go back into the
  history for the next turn (`--tools-only` runs just these, against a server started with
  another family's chat template);
* a bounded load test: many concurrent streaming clients, each must get exactly the tokens it
  asked for, with zero errors, and afterwards /metrics must show nothing running and an empty KV
  cache;
* served greedy outputs (arriving together) equal `everett generate --json` of the same prompts,
  token text and logprob for logprob;
* the page in headless Chromium over the DevTools protocol: it loads without console errors,
  runs an exploration against the live server and shows as many nodes as the API returned, and
  its playground streams a completion.

Run by crates/cli/tests/serve.rs (which starts the server); needs `openai`, `jsonschema` and
`websocket-client`.
Exits non-zero with the failed check named.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import jsonschema
import openai


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def post(url, body):
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def client_checks(url):
    c = openai.OpenAI(base_url=url + "/v1", api_key="none")
    model = c.models.list().data[0].id
    greedy = dict(model=model, temperature=0, max_tokens=12)

    r = c.completions.create(prompt="The capital of France is", **greedy)
    check(r.object == "text_completion" and r.usage.prompt_tokens > 0, f"completion: {r}")
    check(0 < r.usage.completion_tokens <= 12, f"completion usage {r.usage}")
    whole = r.choices[0].text

    text = ""
    for chunk in c.completions.create(prompt="The capital of France is", stream=True, **greedy):
        text += chunk.choices[0].text if chunk.choices else ""
    check(text == whole, f"streamed completion {text!r} != {whole!r}")

    msgs = [{"role": "user", "content": "Name a primary color."}]
    r = c.chat.completions.create(messages=msgs, **greedy)
    check(r.choices[0].message.role == "assistant", f"chat: {r}")
    answer = r.choices[0].message.content
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "chat usage")
    text, usage = "", None
    stream = c.chat.completions.create(
        messages=msgs, stream=True, stream_options={"include_usage": True}, **greedy
    )
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
    check(text == answer, f"streamed chat {text!r} != {answer!r}")
    text = ""
    stream = c.chat.completions.create(
        messages=msgs, stream=True, extra_body={"lookahead": {"window": 6}}, **greedy
    )
    for chunk in stream:
        for ch in chunk.choices:
            text += ch.delta.content or ""
    check(text == answer, f"streamed lookahead chat {text!r} != {answer!r}")
    check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, "stream usage")

    r = c.completions.create(
        model=model, prompt="Once upon a time", n=2, max_tokens=8, temperature=1.0, seed=7,
        extra_body={"ignore_eos": True},
    )
    check(sorted(ch.index for ch in r.choices) == [0, 1], "n=2 indices")
    check(r.usage.completion_tokens == 16, f"n=2 usage {r.usage}")

    r = c.completions.create(prompt="1, 2, 3,", logprobs=3, **greedy)
    lp = r.choices[0].logprobs
    check(len(lp.tokens) == r.usage.completion_tokens == len(lp.token_logprobs), "logprobs length")
    check(all(len(t) == 3 for t in lp.top_logprobs), "top_logprobs")
    check(all(x <= 0 for x in lp.token_logprobs), "logprobs are log-probabilities")
    r = c.chat.completions.create(messages=msgs, logprobs=True, top_logprobs=2, **greedy)
    content = r.choices[0].logprobs.content
    check(len(content) == r.usage.completion_tokens, "chat logprobs length")
    check(all(len(t.top_logprobs) == 2 for t in content), "chat top_logprobs")

    try:
        c.completions.create(model=model, prompt="x", temperature=-1)
        check(False, "temperature=-1 was accepted")
    except openai.BadRequestError as e:
        check(e.body["param"] == "temperature", f"bad request names {e.body}")
    try:
        c.completions.create(model="no-such-model", prompt="x")
        check(False, "an unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.body["param"] == "model", f"unknown model names {e.body}")
    r = c.completions.create(prompt="Still serving?", **greedy)
    check(r.usage.completion_tokens > 0, "serves after bad requests")
    return model


PROMPTS = [
    "The history of the printing press",
    "A recipe for tomato soup begins with",
    "In the deep ocean, creatures",
    "def fibonacci(n):",
    "The best way to learn a language is",
    "Mountains are formed when",
    "My favourite book is",
    "The train left the station at",
]


ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 24},
                "vip": {"type": "boolean"},
            },
            "required": ["name", "vip"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                "required": ["sku", "qty"],
                "additionalProperties": False,
            },
            "minItems": 1,
            "maxItems": 3,
        },
        "status": {"enum": ["new", "paid", "shipped"]},
        "note": {"type": "string", "maxLength": 30},
    },
    "required": ["customer", "items", "status"],
    "additionalProperties": False,
}


def structured_checks(url, model, seeds):
    c = openai.OpenAI(base_url=url + "/v1", api_key="none")
    fmt = {"type": "json_schema",
           "json_schema": {"name": "order", "schema": ORDER_SCHEMA, "strict": True}}
    msgs = [{"role": "user", "content": "Write one shop order as JSON."}]
    valid = 0
    for seed in range(seeds):
        r = c.chat.completions.create(model=model, messages=msgs, temperature=1.0, seed=seed,
                                      max_tokens=200, response_format=fmt)
        text = r.choices[0].message.content
        check(r.choices[0].finish_reason == "stop", f"seed {seed}: {r.choices[0].finish_reason}: {text!r}")
        jsonschema.validate(json.loads(text), ORDER_SCHEMA)
        valid += 1
    stream = c.chat.completions.create(model=model, messages=msgs, temperature=1.0, seed=99,
                                       max_tokens=200, response_format=fmt, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    jsonschema.validate(json.loads(text), ORDER_SCHEMA)
    r = c.completions.create(model=model, prompt="Colour:", temperature=1.0, max_tokens=8, n=4,
                             extra_body={"structured_outputs": {"choice": ["red", "blue"]}})
    check(all(ch.text in ("red", "blue") for ch in r.choices), f"choice: {r.choices}")
    try:
        c.chat.completions.create(model=model, messages=msgs, max_tokens=8, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}})
        check(False, "a broken schema was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "objekt" in str(e), f"broken schema: {e}")
    return valid


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"/metrics has no {name}")


def load_test(url, model, clients, tokens):
    c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    results, errors = [None] * clients, []

    def one(i):
        try:
            prompt = f"{PROMPTS[i % len(PROMPTS)]} (variant {i})"
            stream = c.completions.create(
                model=model, prompt=prompt, max_tokens=tokens, temperature=0.8, seed=i,
                stream=True, stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            pieces, usage, finish = 0, None, None
            for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                for ch in chunk.choices:
                    if ch.finish_reason:
                        finish = ch.finish_reason
                    elif ch.text is not None:
                        pieces += 1
            results[i] = (pieces, usage.completion_tokens if usage else None, finish)
        except Exception as e:  # every failure is reported, none is fatal to the others
            errors.append(f"client {i}: {e!r}")

    start = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - start
    check(not errors, f"{len(errors)} load-test errors: {errors[:3]}")
    bad = [(i, r) for i, r in enumerate(results) if r != (tokens, tokens, "length")]
    check(not bad, f"requests without {tokens} tokens: {bad[:5]}")
    m = get(url + "/metrics")
    check(metric(m, "everett_requests_running") == 0, "requests still running")
    check(metric(m, "everett_requests_waiting") == 0, "requests still waiting")
    check(metric(m, "everett_kv_usage_ratio") == 0, "KV cache not empty after the load")
    print(f"load: {clients} streaming clients x {tokens} tokens in {wall:.1f} s, "
          f"{clients * tokens / wall:.0f} tok/s, 0 errors, KV empty after")


def greedy_identity(url, model, everett, gguf):
    """Served greedy outputs, requested together, equal `everett generate` token for token."""
    c = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=600)
    served = [None] * len(PROMPTS)

    def one(i):
        # Every other request collapses (lookahead) among the plain ones: the same tokens.
        extra = {"lookahead": True} if i % 2 else None
        r = c.completions.create(model=model, prompt=PROMPTS[i], max_tokens=24, temperature=0,
                                 logprobs=1, extra_body=extra)
        served[i] = r.choices[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in PROMPTS:
            f.write(json.dumps({"prompt": p}) + "\n")
    cmd = [everett, "generate", "--prompts-file", f.name, "--max-tokens", "24",
           "--temperature", "0", "--json"]
    if gguf:
        cmd += ["--model", gguf]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    local = [json.loads(line) for line in out.splitlines() if line.strip()]
    check(len(local) == len(PROMPTS), f"everett generate printed {len(local)} objects")
    for p, s, g in zip(PROMPTS, served, local):
        check(s.text == g["text"], f"{p!r}: served {s.text!r} vs generate {g['text']!r}")
        lps = [t["logprob"] for t in g["tokens"]]
        check(s.logprobs.token_logprobs == lps, f"{p!r}: logprobs differ")
    print(f"greedy: {len(PROMPTS)} served outputs (half with lookahead) equal everett generate, "
          "logprobs included")


def page_check(url, chromium):
    import websocket  # websocket-client

    # Chromium's helper processes may still write the profile as it is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            port = None
            deadline = time.time() + 60
            while port is None and time.time() < deadline:
                line = browser.stderr.readline()
                if "DevTools listening on " in line:
                    port = urllib.parse.urlparse(line.split("listening on ")[1].strip()).port
            check(port is not None, "chromium did not open its DevTools port")
            threading.Thread(target=browser.stderr.read, daemon=True).start()
            devtools = urllib.parse.urlunsplit(("http", f"127.0.0.1:{port}", "/json/list", "", ""))
            targets = json.loads(get(devtools))
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            ws = websocket.create_connection(ws_url, timeout=300, suppress_origin=True)
            return drive_page(ws, url)
        finally:
            # The whole process group: the browser and its helpers.
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()


def drive_page(ws, url):
    counter = iter(range(1, 1 << 30))
    problems = []

    def send(method, **params):
        i = next(counter)
        ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(ws.recv())
            note(msg)
            if msg.get("id") == i:
                check("error" not in msg, f"{method}: {msg}")
                return msg.get("result", {})

    def note(msg):
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            problems.append(f"console.{p['type']}: {p.get('args')}")
        elif m == "Runtime.exceptionThrown":
            problems.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            problems.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")

    def js(expr):
        r = send("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def wait_state(what, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = js("document.getElementById('status').dataset.state")
            if state in ("ok", "error"):
                return state
            time.sleep(0.3)
        raise AssertionError(f"the page's {what} did not finish")

    params = {"prompt": "The capital of France is", "branches": 3, "width": 6, "steps": 5, "seed": 3}
    api = post(url + "/v1/explore", params)
    send("Runtime.enable")
    send("Log.enable")
    send("Page.enable")
    send("Page.navigate", url=url + "/#explore=" + urllib.parse.quote(json.dumps(params)))
    state = wait_state("exploration")
    status = js("document.getElementById('status').textContent")
    check(state == "ok", f"exploration on the page failed: {status}")
    shown = js("document.querySelectorAll('#tree .node').length")
    check(shown == len(api["nodes"]), f"page shows {shown} nodes, the API returned {len(api['nodes'])}")
    check(js("document.querySelectorAll('#chart svg rect').length") == len(api["entropy_by_depth"]),
          "entropy chart bars")
    def play(prompt, max_tokens, what):
        """Sends `prompt` from the playground and returns its output once it is done."""
        js(f"document.getElementById('prompt').value={json.dumps(prompt)};"
           f"document.getElementById('p-max').value='{max_tokens}';"
           "document.getElementById('send').click()")
        time.sleep(0.2)
        check(wait_state(what) == "ok", f"the playground's {what} failed")
        return js("document.getElementById('out').textContent")

    # The playground streams a completion into its output.
    js("document.getElementById('tab-play').click()")
    out = play("Water boils at", 8, "completion")
    check(out.startswith("Water boils at") and len(out) > len("Water boils at"), f"playground: {out!r}")
    # With lookahead the playground streams greedy's text, several tokens per chunk at times.
    expected = post(url + "/v1/completions",
                    {"prompt": "1, 2, 3, 4,", "max_tokens": 24, "temperature": 0})
    js("document.getElementById('p-look').checked=true")
    out = play("1, 2, 3, 4,", 24, "lookahead completion")
    want = "1, 2, 3, 4," + expected["choices"][0]["text"]
    check(out == want, f"playground lookahead: {out!r} != {want!r}")
    meta = js("document.getElementById('play-meta').textContent")
    check("tokens per chunk" in meta, f"playground meta: {meta!r}")
    check(not problems, f"console errors: {problems}")
    print(f"page: exploration drawn with {shown} nodes (API: {len(api['nodes'])}), "
          f"playground streamed (plain and lookahead), no console errors")


WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 40},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now in a time zone.",
                                      "parameters": {"type": "object",
                                                     "properties": {"zone": {"type": "string", "maxLength": 40}},
                                                     "required": ["zone"]}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def valid_calls(calls, names, what):
    """Each call names one of `names` and its arguments validate; returns them as (name, args)."""
    check(calls, f"{what}: no tool call")
    out = []
    for call in calls:
        check(call.type == "function" and call.id, f"{what}: call {call}")
        check(call.function.name in names, f"{what}: called {call.function.name}")
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[call.function.name])
        out.append((call.function.name, args))
    return out


def tool_checks(url, model, seeds):
    """Tool calls through the official client; returns how many calls were checked."""
    c = openai.OpenAI(base_url=url + "/v1", api_key="none")
    msgs = [{"role": "user", "content": "What is the weather in Paris right now?"}]
    base = dict(model=model, messages=msgs, tools=TOOLS, max_tokens=80)
    named = {"type": "function", "function": {"name": "get_time"}}
    checked = 0
    for seed in range(seeds):
        for choice, names in (("required", SCHEMAS.keys()), (named, ["get_time"])):
            r = c.chat.completions.create(tool_choice=choice, temperature=1, seed=seed, **base)
            ch = r.choices[0]
            check(ch.finish_reason == "tool_calls", f"tool_choice={choice} seed {seed}: {ch}")
            checked += len(valid_calls(ch.message.tool_calls, names, f"seed {seed}"))
    # Streamed: the calls arrive as delta.tool_calls, then finish_reason tool_calls.
    calls, finish = {}, None
    for chunk in c.chat.completions.create(tool_choice="required", temperature=1, seed=7, stream=True, **base):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for tc in d.tool_calls or []:
            got = calls.setdefault(tc.index, {"id": tc.id, "name": "", "arguments": ""})
            got["name"] += tc.function.name or ""
            got["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    check(finish == "tool_calls" and calls, f"streamed tool call: {calls} {finish}")
    for got in calls.values():
        check(got["name"] in SCHEMAS, f"streamed call {got}")
        jsonschema.validate(json.loads(got["arguments"]), SCHEMAS[got["name"]])
    # The same request without streaming gives the same call.
    r = c.chat.completions.create(tool_choice="required", temperature=1, seed=7, **base)
    first = r.choices[0].message.tool_calls[0]
    check((first.function.name, first.function.arguments) == (calls[0]["name"], calls[0]["arguments"]),
          f"streamed call {calls[0]} != {first}")
    # The call and its result go back into the history; the next turn is answered.
    history = msgs + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": first.id, "type": "function",
                         "function": {"name": first.function.name, "arguments": first.function.arguments}}]},
        {"role": "tool", "tool_call_id": first.id, "content": json.dumps({"temperature": 18})},
    ]
    r = c.chat.completions.create(model=model, messages=history, tools=TOOLS, max_tokens=24, temperature=0)
    check(r.choices[0].finish_reason in ("stop", "length", "tool_calls"), f"after the tool's result: {r}")
    # auto: a call or an answer, never a broken call passed off as text.
    for seed in range(3):
        r = c.chat.completions.create(tool_choice="auto", temperature=1, seed=seed, **base)
        ch = r.choices[0]
        if ch.message.tool_calls:
            valid_calls(ch.message.tool_calls, SCHEMAS.keys(), f"auto seed {seed}")
    # tool_choice "none": no calls.
    r = c.chat.completions.create(tool_choice="none", temperature=0, **base)
    check(not r.choices[0].message.tool_calls, f"tool_choice none called: {r}")
    # A named function that is not offered is a 400 naming the field.
    try:
        c.chat.completions.create(tool_choice={"type": "function", "function": {"name": "nope"}}, **base)
        check(False, "an unknown tool name was accepted")
    except openai.BadRequestError as e:
        check("tool_choice" in str(e), f"bad tool_choice error: {e}")
    return checked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--everett", help="everett binary for the greedy identity check")
    ap.add_argument("--model", help="the GGUF the server runs (for everett generate)")
    ap.add_argument("--chromium", help="a Chromium binary for the page check")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--tools-only", action="store_true", help="only the tool-calling checks")
    a = ap.parse_args()
    if a.tools_only:
        model = openai.OpenAI(base_url=a.url + "/v1", api_key="none").models.list().data[0].id
        n = tool_checks(a.url, model, a.seeds)
        print(f"tool calls: {n} calls valid (required, named, streamed, history, auto, none, 400): ok")
        return
    model = client_checks(a.url)
    print("openai client: completions, chat, streaming, n=2, logprobs, bad requests: ok")
    n = structured_checks(a.url, model, a.seeds)
    print(f"structured outputs: {n} json_schema replies at temperature 1 valid, streamed, choice, 400: ok")
    n = tool_checks(a.url, model, min(a.seeds, 8))
    print(f"tool calls: {n} calls valid (required, named, streamed, history, auto, none, 400): ok")
    load_test(a.url, model, a.clients, a.tokens)
    if a.everett:
        greedy_identity(a.url, model, a.everett, a.model)
    if a.chromium:
        page_check(a.url, a.chromium)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
