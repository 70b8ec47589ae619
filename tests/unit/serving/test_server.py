"""The inference server over HTTP, as an OpenAI client sees it."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import socket
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support import tiny_model
from tests.support.server_proc import get, get_json, post, stream
from tests.unit.serving.conftest import LOCKED_KEY


def _words(text: str) -> list[int]:
    return [int(w[1:]) for w in text.split()]


def test_greedy_completion_equals_trainer_decode(server, tiny):
    prompts = ["w5 w6 w7", "w50 w52", "w97 w98 w99 w0"]
    status, body = post(
        server.url + "/v1/completions",
        {"model": "tiny", "prompt": prompts, "max_tokens": 12, "temperature": 0},
    )
    assert status == 200, body
    assert body["object"] == "text_completion" and len(body["choices"]) == 3
    for choice, prompt in zip(body["choices"], prompts, strict=True):
        ref = tiny_model.greedy_reference(tiny, _words(prompt), 12)
        assert _words(choice["text"]) == ref
        assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 36
    assert body["usage"]["prompt_tokens"] == 3 + 2 + 4


def test_stop_string_ends_the_completion_before_it(server):
    status, body = post(
        server.url + "/v1/completions",
        {"prompt": "w10 w11", "max_tokens": 20, "temperature": 0, "stop": [" w15", "w40"]},
    )
    assert status == 200
    choice = body["choices"][0]
    assert choice["text"] == " w12 w13 w14" and choice["finish_reason"] == "stop"


def test_streaming_completion_sends_deltas_then_done(server):
    events = stream(
        server.url + "/v1/completions",
        {"prompt": "w20", "max_tokens": 6, "temperature": 0, "stream_options": {"include_usage": True}},
    )
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert _words(text) == [21, 22, 23, 24, 25, 26]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert events[-2]["usage"]["completion_tokens"] == 6


def test_streaming_holds_back_a_partial_stop_string(server):
    events = stream(
        server.url + "/v1/completions",
        {"prompt": "w30", "max_tokens": 10, "temperature": 0, "stop": ["w33 w34"]},
    )
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert text == " w31 w32 " and events[-2]["choices"][0]["finish_reason"] == "stop"


def test_n_choices_and_seeded_sampling_are_reproducible(server):
    req = {"prompt": "w1 w2", "max_tokens": 10, "temperature": 1.5, "n": 3, "seed": 42}
    s1, a = post(server.url + "/v1/completions", req)
    s2, b = post(server.url + "/v1/completions", req)
    assert s1 == s2 == 200
    texts_a = [c["text"] for c in a["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert texts_a == [c["text"] for c in b["choices"]]
    assert len(set(texts_a)) > 1, "three seeded choices at temperature 1.5 should not all agree"
    _, other = post(server.url + "/v1/completions", {**req, "seed": 43})
    assert [c["text"] for c in other["choices"]] != texts_a


def test_logprobs_and_echo(server, tiny):
    prompt = "w30 w31 w32 w33"
    status, body = post(
        server.url + "/v1/completions",
        {"prompt": prompt, "max_tokens": 2, "temperature": 0, "logprobs": 2, "echo": True},
    )
    assert status == 200
    choice = body["choices"][0]
    expected = tiny_model.greedy_reference(tiny, _words(prompt), 2)
    assert _words(choice["text"]) == _words(prompt) + expected
    lp = choice["logprobs"]
    assert lp["tokens"] == prompt.split() + [f"w{k}" for k in expected]
    assert lp["token_logprobs"][0] is None and all(x <= 0 for x in lp["token_logprobs"][1:])
    assert len(lp["top_logprobs"][4]) == 2 and f"w{expected[0]}" in lp["top_logprobs"][4]
    best = max(lp["top_logprobs"][4].values())
    assert lp["token_logprobs"][4] == best  # greedy picked the most likely token


def test_chat_completion_and_stream(server):
    msgs = [{"role": "system", "content": "count"}, {"role": "user", "content": "w7 w8"}]
    status, body = post(
        server.url + "/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0}
    )
    assert status == 200, body
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant" and body["object"] == "chat.completion"
    assert re.fullmatch(r"(w\d+ ?)+", msg["content"].strip())
    events = stream(
        server.url + "/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0}
    )
    assert events[-1] == "[DONE]" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert streamed == msg["content"]
    assert events[-2]["choices"][0]["finish_reason"] == body["choices"][0]["finish_reason"]


def test_models_lists_the_served_model(server):
    status, text = get(server.url + "/v1/models")
    body = json.loads(text)
    assert status == 200 and body["data"][0]["id"] == "tiny" and body["data"][0]["max_model_len"] == 128


def test_bad_requests_get_openai_errors_and_serving_continues(server):
    url = server.url + "/v1/completions"
    cases = [
        (b"{not json", 400, None),
        ({"prompt": "w1", "max_tokens": 4, "frobnicate": 1}, 400, "frobnicate"),
        ({"prompt": "w1", "max_tokens": -1}, 400, "max_tokens"),
        ({"prompt": " ".join(["w1"] * 200), "max_tokens": 4}, 400, "prompt"),
        ({"prompt": "w1", "max_tokens": 200}, 400, "max_tokens"),
        ({"prompt": "w1", "temperature": 9}, 400, "temperature"),
        ({"prompt": "w1", "model": "other"}, 404, "model"),
    ]
    for body, code, param in cases:
        status, err = post(url, body)
        assert status == code, (body, err)
        assert set(err["error"]) == {"message", "type", "param", "code"} and err["error"]["message"]
        assert err["error"]["param"] == param
    status, err = post(url, {"prompt": " ".join(["w1"] * 200), "max_tokens": 4})
    assert err["error"]["code"] == "context_length_exceeded" and "128" in err["error"]["message"]
    status, err = post(server.url + "/v1/chat/completions", {"messages": []})
    assert status == 400 and err["error"]["param"] == "messages"
    assert get(server.url + "/v1/nothing")[0] == 404
    status, body = post(url, {"prompt": "w1", "max_tokens": 2, "temperature": 0})
    assert status == 200 and _words(body["choices"][0]["text"]) == [2, 3]


def test_requests_beyond_the_limits_get_4xx_and_serving_continues(server):
    url = server.url + "/v1/completions"
    # n choices decode together: more than the batch (8) is the client's error, not a 500.
    status, err = post(url, {"prompt": "w1", "max_tokens": 2, "n": 9})
    assert status == 400 and err["error"]["param"] == "n" and "max batch size 8" in err["error"]["message"]
    status, err = post(
        server.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "w1"}], "n": 9}
    )
    assert status == 400 and err["error"]["param"] == "n"
    status, err = post(url, {"prompt": ["w1"] * 17, "max_tokens": 2})
    assert status == 400 and err["error"]["param"] == "prompt" and "at most 16" in err["error"]["message"]
    # A body over the 8 MiB default is refused before it is parsed.
    status, err = post(url, json.dumps({"prompt": "w" * (9 << 20)}).encode())
    assert status == 413 and err["error"]["code"] == "request_too_large"
    status, body = post(url, {"prompt": ["w1"] * 16, "max_tokens": 2, "temperature": 0})
    assert status == 200 and len(body["choices"]) == 16


def test_api_key_is_required_on_the_api_but_not_on_probes(locked_server):
    url = locked_server.url + "/v1/completions"
    body = {"prompt": "w1", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": LOCKED_KEY}):
        status, err = post(url, body, headers=headers)
        assert status == 401 and err["error"]["code"] == "invalid_api_key", headers
    assert get(locked_server.url + "/v1/models")[0] == 401
    for path in ("/healthz", "/readyz", "/metrics"):
        assert get(locked_server.url + path)[0] == 200, path
    status, models = get_json(locked_server.url + "/v1/models", {"Authorization": f"Bearer {LOCKED_KEY}"})
    assert status == 200 and models["data"][0]["object"] == "model"


def test_a_request_past_its_deadline_is_ended_with_504(locked_server):
    auth = {"Authorization": f"Bearer {LOCKED_KEY}"}
    long = {"prompt": "w1", "max_tokens": 120, "ignore_eos": True}
    status, err = post(locked_server.url + "/v1/completions", long, headers=auth)
    assert status == 504 and err["error"]["code"] == "timeout"
    # Mid-stream the headers are gone: the error is the last event before [DONE].
    events = stream(locked_server.url + "/v1/completions", long, headers=auth)
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "timeout"


def test_32_concurrent_clients_all_answered_correctly(server, tiny):
    starts = list(range(0, 96, 3))

    async def run() -> list[tuple[int, dict]]:
        async with aiohttp.ClientSession() as session:

            async def one(k: int):
                body = {"prompt": f"w{k} w{k + 1}", "max_tokens": 8, "temperature": 0}
                async with session.post(server.url + "/v1/completions", json=body) as r:
                    return r.status, await r.json()

            return await asyncio.gather(*(one(k) for k in starts))

    results = asyncio.run(run())
    for k, (status, body) in zip(starts, results, strict=True):
        assert status == 200, body
        assert _words(body["choices"][0]["text"]) == tiny_model.greedy_reference(tiny, [k, k + 1], 8)


def test_metrics_report_latency_tokens_and_outcomes_under_vllm_names(server):
    post(server.url + "/v1/completions", {"prompt": "w1", "max_tokens": 3})
    post(server.url + "/v1/completions", {"prompt": "w1", "max_tokens": -3})
    _, text = get(server.url + "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    model = {"model_name": "tiny"}  # --served-model-name
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:request_success",
    ):
        assert name in families, name
        assert all(s.labels.get("model_name") == "tiny" for s in families[name].samples), name
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("vllm:generation_tokens_total", tuple(model.items()))] >= 3
    assert value[("vllm:e2e_request_latency_seconds_count", tuple(model.items()))] >= 1
    assert value[("vllm:request_success_total", (("finished_reason", "length"), *model.items()))] >= 1
    ok = (("handler", "/v1/completions"), ("method", "POST"), ("status", "2xx"))
    bad = (("handler", "/v1/completions"), ("method", "POST"), ("status", "4xx"))
    assert value[("http_requests_total", ok)] >= 1 and value[("http_requests_total", bad)] >= 1
    assert re.search(r'capstan_serve_requests_total\{status="400"\} [1-9]', text)


def test_disconnected_client_is_cancelled(server):
    body = json.dumps({"prompt": "w1", "max_tokens": 100, "stream": True, "ignore_eos": True}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"data:" not in received:  # the socket timeout bounds each wait
            chunk = sock.recv(4096)
            assert chunk, "the server closed the stream before the first event"
            received += chunk
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, text = get(server.url + "/metrics")
        if re.search(r"^vllm:num_requests_running\{[^}]*\} 0\.0$", text, re.M):
            return
        time.sleep(0.1)
    raise AssertionError("the abandoned request was still running 20 s after its client left")


def test_full_queue_gets_429(narrow_server):
    s = narrow_server

    async def run():
        async with aiohttp.ClientSession() as session:

            async def one():
                body = {"prompt": "w1", "max_tokens": 20, "ignore_eos": True}
                async with session.post(s.url + "/v1/completions", json=body) as r:
                    return r.status, await r.json()

            return await asyncio.gather(*(one() for _ in range(4)))

    results = asyncio.run(run())
    codes = sorted(c for c, _ in results)
    assert 200 in codes and 429 in codes, codes
    rejected = next(b for c, b in results if c == 429)
    assert rejected["error"]["code"] == "queue_full"


def test_sigterm_drains_in_flight_requests(server):
    """Runs last in this file: it stops the main server. The request in flight has a client that
    reads nothing until the drain has been checked: 8 choices of 120 tokens with their top-20
    logprobs are hundreds of kilobytes of events, more than the socket buffers hold, so the
    server's handler waits on the client however fast the tiny model generates."""
    s = server
    host, port = s.url.removeprefix("http://").split(":")
    body = {"prompt": "w1", "n": 8, "max_tokens": 120, "logprobs": 20, "ignore_eos": True, "stream": True}
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()  # the headers: the stream has begun; its events are left unread
    assert resp.status == 200
    s.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and get(s.url + "/readyz")[0] != 503:
        time.sleep(0.05)
    status, err = post(s.url + "/v1/completions", {"prompt": "w1"})
    assert status == 503 and err["error"]["code"] == "shutting_down", (status, err)
    lines = resp.read().decode().splitlines()
    conn.close()
    events = [ln[len("data: ") :] for ln in lines if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    finished = [c for e in events[:-1] for c in json.loads(e)["choices"] if c.get("finish_reason")]
    assert sorted((c["index"], c["finish_reason"]) for c in finished) == [(i, "length") for i in range(8)]
    assert s.proc.wait(timeout=30) == 0
    assert "draining 1 in-flight requests" in s.log(), s.log()[-2000:]
