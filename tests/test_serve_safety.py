"""What a hostile sweep found in `serve`, `ask` and `answer`: one bad request must not hurt others,
sampling values that mean nothing are refused or read as greedy, a huge max_tokens is refused and
memory follows the answer, keys that cannot work are refused at start, one record per server."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import mlx.core as mx
import pytest

from mlx_distill.methods import predict_prompt
from mlx_distill.serve import server_address, server_addresses
from mlx_distill.serve.address import remove_server_address, write_server_address
from mlx_distill.student import MAX_NEW_TOKENS, stream_generate
from mlx_distill.testing.cli_runner import assert_one_line_error, run_cli
from mlx_distill.testing.serving import greedy_reference

GOOD = [f"Is a {animal} a mammal? Think of {n} facts." for n, animal in enumerate(
    ["dog", "cat", "bat", "eel", "cow", "owl", "fox", "yak", "emu", "ant", "ram", "hen"])]


@pytest.fixture(scope="module")
def reference(demo_models):
    return greedy_reference(demo_models["student"], 16)


def _post(url: str, raw: str) -> httpx.Response:
    # Raw JSON text: NaN and "\ud800" are valid to Python's json but cannot come from httpx's json=.
    return httpx.post(url + "/v1/chat/completions", content=raw.encode(), timeout=60,
                      headers={"content-type": "application/json"})


def _chat(question: str, **fields) -> str:
    body = {"model": "tiny", "messages": [{"role": "user", "content": question}], "max_tokens": 16, **fields}
    return json.dumps(body)


@pytest.mark.parametrize("bad", [_chat("why \\ud800 not?").replace("\\\\ud800", "\\ud800"),
                                 _chat(GOOD[0]).replace('"max_tokens"', '"top_p": NaN, "max_tokens"')])
def test_one_bad_request_gets_its_own_400_and_never_fails_the_others(server, reference, bad):
    assert "\\ud800" in bad or "NaN" in bad
    bodies = [_chat(q) for q in GOOD] + [bad]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda raw: _post(server.url, raw), bodies))
    *good, refused = responses
    assert refused.status_code == 400, refused.text
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
    for question, response in zip(GOOD, good):
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == reference(question)


def test_sampling_values(server, reference):
    question = GOOD[1]
    for raw in (_chat(question).replace('"max_tokens"', '"temperature": NaN, "max_tokens"'),
                _chat(question).replace('"max_tokens"', '"temperature": Infinity, "max_tokens"'),
                _chat(question, n=True), _chat(question, n=1.0)):
        response = _post(server.url, raw)
        assert response.status_code == 400, (raw, response.text)
    assert _post(server.url, _chat(question, n=1)).status_code == 200
    # Values that round to 0 in float32 mean greedy, not random text.
    for fields in ({"temperature": 1e-50}, {"temperature": 1.0, "top_p": 1e-50}, {"temperature": 1e-7}):
        for _ in range(3):
            response = _post(server.url, _chat(question, **fields))
            assert response.json()["choices"][0]["message"]["content"] == reference(question), fields


def test_deeply_nested_json_is_a_400(server):
    response = _post(server.url, "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["error"]["message"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_health_reports_peak_memory(server):
    assert httpx.get(server.url + "/health").json()["peak_memory_bytes"] > 0


def test_keys_that_cannot_work_are_refused_at_start(demo_models):
    student = demo_models["student"]
    assert_one_line_error(run_cli("serve", student, "--api-key", ""), "--api-key is empty")
    assert_one_line_error(run_cli("serve", student, "--api-key", "cl\u00e9"), "ASCII")
    assert_one_line_error(run_cli("serve", student, "--max-tokens", "100000000"), f"at most {MAX_NEW_TOKENS}")


def test_ask_refuses_a_huge_max_tokens_and_text_that_is_not_utf8(demo_models, tmp_path):
    student = demo_models["student"]
    assert_one_line_error(run_cli("ask", student, "Is a bat a bird?", "--max-tokens", "100000000"),
                          f"at most {MAX_NEW_TOKENS}")
    # An undecodable byte in argv reaches Python as a lone surrogate.
    for question in ("caf\udce9?", "why \ud800"):
        assert_one_line_error(run_cli("ask", student, question), "not UTF-8")
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"input": "fine"}\n{"input": "bad \\ud800"}\n', encoding="utf-8")
    assert_one_line_error(run_cli("answer", student, "--in", questions, "--out", tmp_path / "a.jsonl",
                                  "--max-tokens", "100000000"), f"at most {MAX_NEW_TOKENS}")
    assert_one_line_error(run_cli("answer", student, "--in", questions, "--out", tmp_path / "a.jsonl"), "q.jsonl:2")


def test_memory_follows_the_answer_not_max_tokens(reference):
    model, tokenizer = reference.model, reference.tokenizer
    prompt = predict_prompt(GOOD[2])

    def first_token_peak(max_tokens: int) -> int:
        mx.synchronize()
        mx.clear_cache()
        mx.reset_peak_memory()
        next(iter(stream_generate(model, tokenizer, prompt, max_tokens=max_tokens)))
        return int(mx.get_peak_memory())

    first_token_peak(64)  # compile once
    args = model.args
    preallocated = 2 * args.num_decoder_layers * args.num_heads * args.d_kv * MAX_NEW_TOKENS * 4
    assert first_token_peak(MAX_NEW_TOKENS) - first_token_peak(64) < preallocated // 4


def test_a_growing_cache_decodes_what_a_full_forward_pass_reads(reference):
    """Past the cache's first sizes (64, 128) each greedy token is the argmax of a full forward pass."""
    model, tokenizer = reference.model, reference.tokenizer
    prompt = predict_prompt(GOOD[3] + " Explain it at great length, with every fact you know.")
    tokens = [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=150)]
    if model.args.eos_token_id in tokens:
        tokens = tokens[: tokens.index(model.args.eos_token_id) + 1]
    assert len(tokens) > 64, "the tiny student stopped early; pick a longer prompt"
    ids = mx.array([tokenizer(prompt)["input_ids"]])
    decoder_in = mx.array([[model.args.decoder_start_token_id] + tokens[:-1]])
    logits = model(ids, decoder_in)
    assert mx.argmax(logits[0], axis=-1).tolist() == tokens


def test_two_servers_of_one_run_keep_their_own_records(tmp_path):
    mine = write_server_address(tmp_path, "http://127.0.0.1:1111")
    other = write_server_address(tmp_path, "http://127.0.0.1:2222", pid=os.getppid())  # a live process
    assert set(server_addresses(tmp_path)) == {"http://127.0.0.1:1111", "http://127.0.0.1:2222"}
    remove_server_address(mine)
    assert server_address(tmp_path) == "http://127.0.0.1:2222"
    write_server_address(tmp_path, "http://127.0.0.1:3333", pid=2**22 + 12345)  # a dead pid is ignored
    assert server_addresses(tmp_path) == ["http://127.0.0.1:2222"]
    remove_server_address(other)
    assert server_address(tmp_path) is None
