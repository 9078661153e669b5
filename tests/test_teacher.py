"""The teacher stage with tiny random llama/qwen2 checkpoints built in the Hugging Face layout."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_distill.data import Example, load_task
from mlx_distill.errors import DistillError
from mlx_distill.events import TeacherLoaded, TeacherProgress, TeacherReleased
from mlx_distill.files import lock_holder, lock_path_for
from mlx_distill.teacher import (current_teacher, pick_exemplars, generate_rationales, load_prompt, load_teacher, release_teacher,
                                 render_prompt)
from mlx_distill.testing.tiny_llm import build_tiny_llm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("llama"), arch="llama")


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("qwen2"), arch="qwen2", seed=1)


def _examples(n: int) -> list[Example]:
    words = ["apples", "pens", "books", "cars", "shells", "coins", "kites"]
    return [Example(id=f"q{i}", input=f"Sam has {i} {words[i % 7]} and finds {i * 2 + 1} more." + " Then" * (i % 5)
                    + " How many are there now?", label=f"( {i} + {i * 2 + 1} )") for i in range(n)]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlx_distill", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kwargs)


def _assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_tiny_llm_is_a_real_hf_checkpoint(llama, qwen2):
    """mlx-lm and transformers load it and compute the same logits."""
    import mlx.core as mx
    import numpy as np
    import torch
    from mlx_lm import load
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for folder in (llama, qwen2):
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "generation_config.json"} <= names
        model, tokenizer = load(str(folder))
        assert tokenizer.has_chat_template
        ids = tokenizer.encode("Q: Sam has 3 pens. So the answer is 3.")
        ours = np.array(model(mx.array([ids]))[0, -1])
        reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        with torch.no_grad():
            theirs = reference(torch.tensor([ids])).logits[0, -1].numpy()
        np.testing.assert_allclose(ours, theirs, atol=2e-3, rtol=1e-3)
        assert AutoTokenizer.from_pretrained(folder).encode("So the answer is 3.") == tokenizer.encode(
            "So the answer is 3.")


def test_tiny_llm_builds_fast(tmp_path):
    import mlx_lm  # noqa: F401  (import time is not build time)

    start = time.perf_counter()
    build_tiny_llm(tmp_path / "t", arch="qwen2")
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_batch_sizes_and_prefix_cache_give_the_same_greedy_text(arch, llama, qwen2, tmp_path):
    folder = llama if arch == "llama" else qwen2
    examples = _examples(10)
    texts = {}
    for name, kwargs in {"b1": dict(batch_size=1), "b8": dict(batch_size=8),
                         "b8-nocache": dict(batch_size=8, prefix_cache=False)}.items():
        out = tmp_path / f"{name}.jsonl"
        generate_rationales(examples, "svamp", str(folder), out, max_tokens=20, **kwargs)
        texts[name] = {r["id"]: r["raw"] for r in _records(out)}
    assert len(texts["b1"]) == 10
    assert texts["b1"] == texts["b8"] == texts["b8-nocache"]
    assert len(set(texts["b1"].values())) > 1  # the prompts really differ


def test_matches_plain_mlx_lm_generate(llama, tmp_path):
    """The batched, prefix-cached text equals mlx_lm.generate on the full prompt."""
    from mlx_lm import generate, load

    examples = _examples(4)
    out = tmp_path / "r.jsonl"
    generate_rationales(examples, "svamp", str(llama), out, batch_size=4, max_tokens=16, filter="all")
    ours = {r["id"]: r for r in _records(out)}
    model, tokenizer = load(str(llama))
    template = load_prompt("svamp")
    for example in examples:
        tokens = render_prompt(tokenizer, template, "svamp", example.input, example.label)
        assert ours[example.id]["prompt_tokens"] == len(tokens)
        reference = generate(model, tokenizer, tokens, max_tokens=16)
        assert reference.startswith(ours[example.id]["raw"])


def test_events_memory_and_release(llama, tmp_path):
    events = []
    summary = generate_rationales(_examples(6), "svamp", str(llama), tmp_path / "r.jsonl", batch_size=4,
                                  max_tokens=8, filter="all", on_event=events.append)
    kinds = [type(e) for e in events]
    assert kinds[0] is TeacherLoaded and kinds[-1] is TeacherReleased
    progress = [e for e in events if isinstance(e, TeacherProgress)]
    assert progress[-1].done == progress[-1].total == 6
    assert progress[-1].generation_tps > 0 and progress[-1].prompt_tps > 0
    assert progress[-1].latest_id
    assert summary.peak_memory_bytes > 0 and summary.generated_tokens == 6 * 8
    assert current_teacher() is None


def test_filters_and_parse_failures_are_recorded(llama, tmp_path):
    """A random model's output does not parse: recorded, not fatal; the filter decides acceptance."""
    by_filter = {}
    for policy in ("gold", "all", "teacher"):
        out = tmp_path / f"{policy}.jsonl"
        summary = generate_rationales(_examples(4), "svamp", str(llama), out, max_tokens=12, filter=policy)
        by_filter[policy] = (summary, _records(out))
    gold_summary, gold_records = by_filter["gold"]
    assert gold_summary.parse_failures == 4 and gold_summary.accepted == 0
    assert all(r["parse_ok"] is False and r["agrees"] is False and not r["accepted"] for r in gold_records)
    all_summary, all_records = by_filter["all"]
    assert all_summary.accepted == sum(bool(r["rationale"].strip()) for r in all_records) > 0
    assert by_filter["teacher"][0].accepted == 0


def test_resume_skips_done_ids_and_tolerates_a_torn_line(llama, tmp_path):
    out = tmp_path / "r.jsonl"
    examples = _examples(8)
    generate_rationales(examples[:5], "svamp", str(llama), out, max_tokens=6)
    with open(out, "a") as handle:
        handle.write('{"id": "q5", "teacher": "x", "raw": "half a li')  # a writer killed mid-line
    summary = generate_rationales(examples, "svamp", str(llama), out, max_tokens=6)
    assert summary.skipped == 5 and summary.done == 8
    ids = [r["id"] for r in _records(out)]
    assert sorted(ids) == sorted(e.id for e in examples)


def test_other_prompt_or_teacher_refuses_to_mix(llama, qwen2, tmp_path):
    out = tmp_path / "r.jsonl"
    generate_rationales(_examples(2), "svamp", str(llama), out, max_tokens=4)
    with pytest.raises(DistillError, match=r"r\.jsonl.*another teacher or prompt.*new --out"):
        generate_rationales(_examples(2), "svamp", str(qwen2), out, max_tokens=4)
    with pytest.raises(DistillError, match="another teacher or prompt"):
        generate_rationales(_examples(2), "svamp", str(llama), out, max_tokens=4, rationalize=True)


def test_samples_with_majority_vote(qwen2, tmp_path):
    out = tmp_path / "r.jsonl"
    summary = generate_rationales(_examples(3), "svamp", str(qwen2), out, max_tokens=6, samples=3, filter="all")
    records = _records(out)
    # Three sampled answers per question, 6 tokens at most each (a sample may stop early at a stop string).
    assert len(records) == 3 and summary.generated_tokens == sum(r["generated_tokens"] for r in records)
    assert all(3 <= r["generated_tokens"] <= 18 for r in records)


def test_completion_prompt_without_chat_template(tmp_path):
    folder = build_tiny_llm(tmp_path / "plain", arch="llama")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    from mlx_lm import load

    _, tokenizer = load(str(folder))
    assert not tokenizer.has_chat_template
    tokens = render_prompt(tokenizer, load_prompt("svamp"), "svamp", "Sam has 2 pens.")
    assert tokenizer.decode(tokens).endswith("Q: Sam has 2 pens.\nA:")
    summary = generate_rationales(_examples(3), "svamp", str(folder), tmp_path / "r.jsonl", max_tokens=5)
    assert summary.done == 3


def test_quantize_on_load(llama):
    import mlx.nn as nn

    native = load_teacher(str(llama), quantize=4, precision="native")
    assert isinstance(native.model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert native.name.endswith("@q4")
    release_teacher()
    cpu = load_teacher(str(llama), quantize=4, precision="float32")
    layer = cpu.model.model.layers[0].self_attn.q_proj
    assert type(layer) is nn.Linear and str(layer.weight.dtype) == "mlx.core.float32"
    release_teacher()


def _demo_data(tmp_path: Path, n: int) -> Path:
    lines = (REPO / "examples" / "demo" / "train.jsonl").read_text().splitlines()[:n]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _asked_ids(data: Path) -> set[str]:
    """The training ids the teacher is asked: all but the rows taken as the prompt's exemplars."""
    train = load_task("jsonl", data).train
    return {e.id for e in train} - {e.id for e in pick_exemplars(train)}


def test_cli_whole_stage(qwen2, tmp_path):
    data = _demo_data(tmp_path, 30)
    out = tmp_path / "r.jsonl"
    result = _cli("generate", "--task", "jsonl", "--data", str(data), "--teacher", str(qwen2), "--out", str(out),
                  "--max-tokens", "12", "--batch-size", "4", "--filter", "all")
    assert result.returncode == 0, result.stderr
    train = load_task("jsonl", data).train
    # Rows with reference rationales in varied answer positions are the prompt's exemplars, not asked.
    held_out = {e.id for e in pick_exemplars(train)}
    assert len(held_out) == 4
    train_ids = {e.id for e in train} - held_out
    records = _records(out)
    assert {r["id"] for r in records} == train_ids and len(records) == len(train_ids)
    assert "teacher released" in result.stderr
    assert f"{len(train_ids)}/{len(train_ids)} examples" in result.stdout


@pytest.mark.slow
def test_cli_sigkill_then_rerun_gives_one_record_per_example(llama, tmp_path):
    data = _demo_data(tmp_path, 200)
    out = tmp_path / "r.jsonl"
    args = ["generate", "--task", "jsonl", "--data", str(data), "--teacher", str(llama), "--out", str(out),
            "--max-tokens", "48", "--batch-size", "4", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "mlx_distill", *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 12:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(_records(out))
    expected = _asked_ids(data)
    assert 12 <= partial < len(expected)
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in _records(out)]
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected


def test_cli_second_writer_of_the_same_file_fails_at_once(llama, tmp_path):
    """Two `generate` runs with one --out: the second is refused before it loads a model, naming the
    first's pid; the first writes each example once."""
    data = _demo_data(tmp_path, 200)
    out = tmp_path / "out.jsonl"
    args = ["generate", "--task", "jsonl", "--data", str(data), "--teacher", str(llama), "--out", str(out),
            "--max-tokens", "48", "--batch-size", "4", "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "mlx_distill", *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while lock_holder(lock_path_for(out)) != first.pid and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock_holder(lock_path_for(out)) == first.pid, "the first run never held the lock"
        start = time.monotonic()
        second = _cli(*args)
        seconds = time.monotonic() - start
        assert first.poll() is None, "the first run ended before the second started; give it more work"
        line = _assert_one_line_error(second)
        assert f"rationale file {out} is already being written by pid {first.pid}" in line
        # Refused at the lock, before mlx_lm is imported and a model loaded (that alone takes seconds).
        assert "loaded" not in second.stderr and seconds < 2.5, (seconds, second.stderr)
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    ids = [r["id"] for r in _records(out)]
    assert len(ids) == len(set(ids)) and set(ids) == _asked_ids(data)


def test_cli_ctrl_c_stops_after_saving_and_releases_the_teacher(llama, tmp_path):
    """The stage's MLX work runs in a thread of its own: Ctrl-C in the waiting main thread still stops
    it cleanly (records whole, teacher released, exit 130, no MLX abort)."""
    data = _demo_data(tmp_path, 200)
    out = tmp_path / "r.jsonl"
    args = ["generate", "--task", "jsonl", "--data", str(data), "--teacher", str(llama), "--out", str(out),
            "--max-tokens", "200", "--batch-size", "2", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "mlx_distill", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not (out.exists() and out.stat().st_size):
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be stopped; make it longer"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "teacher released" in stderr and "finished records are kept" in stderr and "Traceback" not in stderr
    text = out.read_text()
    assert text.endswith("\n")
    records = _records(out)
    assert 0 < len(records) < len(load_task("jsonl", data).train)


def test_cli_unknown_model_offline(tmp_path):
    data = _demo_data(tmp_path, 5)
    # No network and an empty cache: the hub is never reached.
    line = _assert_one_line_error(_cli(
        "generate", "--task", "jsonl", "--data", str(data), "--teacher", "nobody/no-such-model-xyz",
        "--out", str(tmp_path / "r.jsonl"), env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}))
    assert "nobody/no-such-model-xyz" in line


def test_cli_folder_that_is_not_a_causal_lm(tmp_path):
    data = _demo_data(tmp_path, 5)
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True,
                                                "architectures": ["T5ForConditionalGeneration"]}))
    line = _assert_one_line_error(_cli("generate", "--task", "jsonl", "--data", str(data), "--teacher", str(t5),
                                       "--out", str(tmp_path / "r.jsonl")))
    assert "not a causal LM" in line and str(t5) in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _assert_one_line_error(_cli("generate", "--task", "jsonl", "--data", str(data), "--teacher",
                                       str(empty), "--out", str(tmp_path / "r.jsonl")))
    assert "config.json" in line


def test_cli_prompt_file_without_placeholder(llama, tmp_path):
    data = _demo_data(tmp_path, 5)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Answer the question.\nA:")
    line = _assert_one_line_error(_cli("generate", "--task", "jsonl", "--data", str(data), "--teacher", str(llama),
                                       "--out", str(tmp_path / "r.jsonl"), "--prompt-file", str(prompt)))
    assert "prompt.txt" in line and "{input}" in line


def test_cli_model_too_large_for_memory(tmp_path):
    data = _demo_data(tmp_path, 5)
    folder = build_tiny_llm(tmp_path / "huge", arch="llama")
    # A sparse safetensors file whose header declares 80 GB of float32 weights: the memory check
    # reads the header and refuses before anything is loaded. The KV cache of this tiny config is
    # a few kB, so it is the weights alone that do not fit: a smaller batch would not help.
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "F32", "shape": [2_000_000, 10_000],
                                                       "data_offsets": [0, 80_000_000_000]}}).encode()
    weights = folder / "model.safetensors"
    with open(weights, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + 80_000_000_000)
    line = _assert_one_line_error(_cli("generate", "--task", "jsonl", "--data", str(data), "--teacher",
                                       str(folder), "--out", str(tmp_path / "r.jsonl")))
    assert "needs about" in line and "available" in line
    assert "pick a smaller teacher" in line and "--batch-size" not in line


def test_unreadable_safetensors_header_is_one_line_naming_the_file(tmp_path):
    folder = build_tiny_llm(tmp_path / "torn", arch="llama")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a download cut short inside the header
    with pytest.raises(DistillError, match=r"model\.safetensors is corrupt or truncated .*re-download"):
        load_teacher(str(folder))


def _scripted_llm(folder: Path, script: str) -> Path:
    """A tiny llama that deterministically writes ``script`` and then its end-of-turn token.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's
    embedding; the untied output head maps each script token to the next one (a successor table).
    This gives the tests a teacher whose answer is known, to check stopping, parsing and filters.
    """
    import mlx.core as mx
    from transformers import AutoTokenizer

    # Train the tokenizer on the script so its words become single (distinct) tokens.
    build_tiny_llm(folder, arch="llama", corpus=[script] * 50)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    # End the generation prompt without a newline so "\n" can appear inside the script.
    config["chat_template"] = config["chat_template"].replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant'")
    assert config["chat_template"].endswith("'<|im_start|>assistant' }}{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    start = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                          tokenize=False)
    last = tokenizer.encode(start, add_special_tokens=False)[-1]
    chain = [last, *tokenizer.encode(script, add_special_tokens=False), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert len(set(chain)) == len(chain), "the script repeats a token; reword it"
    weights = mx.load(str(folder / "model.safetensors"))
    for name in weights:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = mx.zeros_like(weights[name])
    embed = weights["model.embed_tokens.weight"]
    head = mx.zeros_like(weights["lm_head.weight"])
    for current, following in zip(chain, chain[1:]):
        head[following] = embed[current]
    weights["lm_head.weight"] = head
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "pt"})
    return folder


CQA = dict(choices=("bank", "river", "zoo"))


def test_scripted_teacher_answer_is_parsed_and_filtered(tmp_path):
    folder = _scripted_llm(tmp_path / "m", "Vaults keep money safe. So the answer is (a) bank")
    examples = [Example(id="right", input="Where is money kept?\nAnswer Choices:\n(a) bank\n(b) river\n(c) zoo",
                        label="bank", **CQA),
                Example(id="wrong", input="Where do fish live?\nAnswer Choices:\n(a) bank\n(b) river\n(c) zoo",
                        label="river", **CQA)]
    out = tmp_path / "r.jsonl"
    summary = generate_rationales(examples, "cqa", str(folder), out, batch_size=2, max_tokens=40)
    records = {r["id"]: r for r in _records(out)}
    assert records["right"]["raw"] == "Vaults keep money safe. So the answer is (a) bank"
    assert records["right"]["rationale"] == "Vaults keep money safe."
    assert records["right"]["answer"] == "bank"
    assert records["right"]["agrees"] is True and records["right"]["accepted"] is True
    assert records["wrong"]["agrees"] is False and records["wrong"]["accepted"] is False
    assert summary.accepted == 1 and summary.accept_rate == 0.5
    # Stopped at the end-of-turn token, not at max_tokens.
    assert records["right"]["generated_tokens"] < 40


def test_scripted_teacher_stops_at_an_invented_next_exemplar(tmp_path):
    script = "Zoos keep animals. So the answer is (c) zoo\nQ: What do bees make?"
    folder = _scripted_llm(tmp_path / "m", script)
    example = Example(id="z", input="Where are lions kept?\nAnswer Choices:\n(a) bank\n(b) river\n(c) zoo",
                      label="zoo", **CQA)
    out = tmp_path / "r.jsonl"
    generate_rationales([example], "cqa", str(folder), out, max_tokens=60)
    (record,) = _records(out)
    assert record["raw"].endswith("\nQ:") and "bees" not in record["raw"]
    assert (record["rationale"], record["answer"], record["accepted"]) == ("Zoos keep animals.", "zoo", True)


def test_stage_in_a_worker_thread_exits_cleanly(llama, tmp_path):
    """MLX streams are thread-local: the stage runs from a non-main thread and the process exits 0.

    The caller does not clear MLX streams: the stage does its MLX work in a thread of its own that
    clears them (without that, MLX 0.32 aborts the process at exit now and then).
    """
    code = (
        "import threading, sys\n"
        "from mlx_distill.data import Example\n"
        "from mlx_distill.teacher import generate_rationales\n"
        "ex = [Example(id=str(i), input=f'Sam has {i} pens.', label='1') for i in range(4)]\n"
        "result = []\n"
        "def work():\n"
        f"    result.append(generate_rationales(ex, 'svamp', {str(llama)!r}, {str(tmp_path / 'r.jsonl')!r}, "
        "max_tokens=4))\n"
        "t = threading.Thread(target=work)\n"
        "t.start(); t.join()\n"
        "assert result and result[0].done == 4\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(_records(tmp_path / "r.jsonl")) == 4
