"""The GIL is released while the engine works: Python threads submit concurrently and their
requests share forward passes; asyncio awaits never block the loop; Ctrl-C aborts a long
generate with KeyboardInterrupt and leaves the LLM usable."""

import asyncio
import os
import signal
import threading
import time

import pytest

import everett
from everett import SamplingParams

PROMPTS = [f"Write a sentence about the number {i}." for i in range(8)]
GREEDY = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)


def test_threads_share_forward_passes(llm):
    alone = [llm.generate(p, GREEDY)[0].outputs[0].token_ids for p in PROMPTS]
    steps_before = llm.stats()["steps"]
    results = [None] * len(PROMPTS)
    barrier = threading.Barrier(len(PROMPTS))

    def work(i):
        barrier.wait()
        results[i] = llm.generate(PROMPTS[i], GREEDY)[0].outputs[0].token_ids

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = llm.stats()["steps"] - steps_before
    # The same tokens as each alone (a sequence's logits do not depend on its batch) ...
    assert results == alone
    # ... in far fewer forward passes than 8 × 32 decode steps: the threads' requests ran together.
    assert steps < len(PROMPTS) * 32 / 2, steps


def test_interrupt_aborts_and_llm_stays_usable(llm):
    # A process started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: install it for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        interrupt_and_reuse(llm)
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupt_and_reuse(llm):
    long = SamplingParams(temperature=0, max_tokens=4000, ignore_eos=True)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        llm.generate(["Tell me a long story.", "Count to a thousand."], long)
    assert time.monotonic() - start < 5
    for _ in range(100):
        if llm.stats()["running"] == 0:
            break
        time.sleep(0.02)
    assert llm.stats()["running"] == 0
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=4))[0]
    assert len(out.outputs[0].token_ids) == 4


def test_async_does_not_block_the_loop(llm):
    alone = [llm.generate(p, GREEDY)[0].outputs[0].token_ids for p in PROMPTS[:4]]
    ticks = 0

    async def ticker(stop):
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    async def main():
        allm = everett.AsyncLLM(str(llm.model_path), kv_tokens=4096)
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        start = time.monotonic()
        outs = await asyncio.gather(*(allm.generate(p, GREEDY) for p in PROMPTS[:4]))
        elapsed = time.monotonic() - start
        deltas = [d async for d in allm.stream(PROMPTS[0], GREEDY)]
        stop.set()
        await tick
        allm.close()
        return outs, deltas, elapsed

    outs, deltas, elapsed = asyncio.run(main())
    assert [o.outputs[0].token_ids for o in outs] == alone
    assert [i for d in deltas for i in d.outputs[0].token_ids] == alone[0]
    assert deltas[-1].finished
    # The loop kept turning while the engine worked: at least a third of the 5 ms ticks.
    assert ticks >= elapsed / 0.005 / 3, (ticks, elapsed)


def test_async_cancel_cancels_the_request(llm):
    async def main():
        allm = everett.AsyncLLM(str(llm.model_path), kv_tokens=4096)
        long = SamplingParams(temperature=0, max_tokens=4000, ignore_eos=True)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(allm.generate("Tell me a story.", long), 0.5)
        for _ in range(100):
            if allm.stats()["running"] == 0:
                break
            await asyncio.sleep(0.02)
        running = allm.stats()["running"]
        allm.close()
        return running

    assert asyncio.run(main()) == 0
