"""Few-shot chain-of-thought prompts for the teacher: prompt files, rendering, stop strings.

A prompt file is plain text in blocks separated by lines that hold only ``---``:

* the first block is the instruction;
* each middle block is one worked exemplar: the question, then a line starting with ``A:`` that
  starts the answer (a rationale ending in ``So the answer is ...``);
* the last block is the query template, holding ``{input}`` (and optionally ``{answer}``, the gold
  label, for rationalization); its ``A:`` line marks where the teacher writes.

A file with no ``---`` line is one query template (no instruction, no exemplars). The built-in
files are ``mlx_distill/teacher/prompts/<task>.txt``.

Rendering: with a chat template, the instruction and the first exemplar's question form the first
user turn, each exemplar's answer is an assistant turn and the query is the last user turn, so the
model answers in the exemplars' style and its end-of-turn token ends the answer. Without a chat
template the blocks are joined into one completion prompt ending in ``A:``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlx_distill.errors import DistillError
from mlx_distill import methods
from mlx_distill.methods import COT_ANSWER_PHRASE

BUILTIN_TASKS = ("svamp", "cqa", "esnli", "anli")
# Prompt file for the generic tasks (jsonl/csv) when the user gives none.
GENERIC_TEMPLATE = f"Answer the question. Explain your reasoning, then end with: {COT_ANSWER_PHRASE} ...\n---\nQ: {{input}}\nA:"

BLOCK_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)
ANSWER_LINE = re.compile(r"^A:[ \t]?", re.MULTILINE)

# Text that starts a new exemplar or turn: the teacher must stop there (the paper's PaLM outputs
# ran on into invented next examples).
STOP_STRINGS = ("\n\nQ:", "\nQ:", "\nPremise:", "\n---", "\nHypothesis:")
# End-of-turn tokens of common chat templates; used as stop tokens when the vocabulary has them.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>",
                      "<|endoftext|>")

NLI_TASKS = ("esnli", "anli")


@dataclass(frozen=True)
class Exemplar:
    question: str
    answer: str


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed prompt file."""

    instruction: str
    exemplars: tuple[Exemplar, ...]
    query: str  # the question part of the last block, with {input} (and maybe {answer})
    source: str  # the file text, for the prompt hash

    def hash(self, *, rationalize: bool = False, extra: str = "") -> str:
        text = f"{self.source}\x00rationalize={rationalize}\x00{extra}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split_answer(block: str) -> tuple[str, str | None]:
    match = ANSWER_LINE.search(block)
    if match is None:
        return block.strip(), None
    return block[: match.start()].strip(), block[match.end():].strip()


def parse_prompt_text(text: str, origin: str = "<prompt>") -> PromptTemplate:
    """Parse prompt-file text (format in the module docstring).

    Raises:
        DistillError: when the query block has no ``{input}`` placeholder or an exemplar has no
            ``A:`` answer line.
    """
    blocks = [b.strip("\n") for b in BLOCK_SEPARATOR.split(text)]
    if len(blocks) == 1:
        instruction, middle, last = "", [], blocks[0]
    else:
        instruction, middle, last = blocks[0].strip(), blocks[1:-1], blocks[-1]
    if "{input}" not in last:
        raise DistillError(
            f"prompt file {origin} has no {{input}} placeholder in its last block; "
            "add a line such as 'Q: {input}' where each question goes"
        )
    exemplars = []
    for index, block in enumerate(middle, start=1):
        question, answer = _split_answer(block)
        if answer is None:
            raise DistillError(
                f"prompt file {origin}: exemplar {index} has no line starting with 'A:'; "
                "write the worked answer after 'A:'"
            )
        exemplars.append(Exemplar(question, answer))
    query, _ = _split_answer(last)
    return PromptTemplate(instruction, tuple(exemplars), query, text)


def load_prompt(task: str, prompt_file: str | Path | None = None, exemplars: list | tuple = ()) -> PromptTemplate:
    """The user's prompt file, else the built-in one for ``task``, else a few-shot prompt from
    ``exemplars`` (see ``pick_exemplars``), else the generic template."""
    if prompt_file is not None:
        path = Path(prompt_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise DistillError(f"cannot read prompt file {path}: {error.strerror or error}") from error
        except UnicodeDecodeError:
            text = "\0"
        if "\0" in text:
            raise DistillError(f"prompt file {path} is not UTF-8 text (a binary file?); give a plain text prompt file")
        return parse_prompt_text(text, str(path))
    if task in BUILTIN_TASKS:
        text = resources.files("mlx_distill.teacher.prompts").joinpath(f"{task}.txt").read_text(encoding="utf-8")
        return parse_prompt_text(text, f"built-in {task}.txt")
    if exemplars:
        return parse_prompt_text(exemplar_prompt_text(exemplars), "few-shot prompt from your training rows")
    return parse_prompt_text(GENERIC_TEMPLATE, "built-in generic prompt")


# Multiple choice written inside the input, as the CQA format writes it:
# "question\nAnswer Choices:\n(a) first\n(b) second" (or the choices on one line).
_CHOICES_HEADER = re.compile(r"answer\s+choices\s*:", re.IGNORECASE)
_CHOICE_ITEM = re.compile(r"\(\s*([a-z])\s*\)\s*(.+?)\s*(?=\(\s*[a-z]\s*\)|$)", re.IGNORECASE | re.DOTALL)
EXEMPLAR_COUNT = 4
# Rows a task needs before some of them are taken as exemplars (held out from generation).
MIN_ROWS_FOR_EXEMPLARS = 16


def choices_in_input(text: str) -> tuple[str, ...]:
    """The choices of a multiple-choice question written inside its input, in letter order, or ()."""
    header = _CHOICES_HEADER.search(text)
    if header is None:
        return ()
    items = _CHOICE_ITEM.findall(text[header.end():])
    letters = [letter.lower() for letter, _ in items]
    if len(items) < 2 or letters != [chr(ord("a") + i) for i in range(len(items))]:
        return ()
    return tuple(" ".join(choice.split()) for _, choice in items)


def _gold_position(example) -> int:
    choices = example.choices or choices_in_input(example.input)
    lowered = [c.lower() for c in choices]
    return lowered.index(example.label.lower()) if example.label.lower() in lowered else -1


def pick_exemplars(examples: list, count: int = EXEMPLAR_COUNT) -> list:
    """Up to ``count`` training rows with a reference rationale to show the teacher as worked
    exemplars: a fixed choice (by a hash of the id, so reruns pick the same), with the answers in
    different choice positions where the task is multiple choice (against position bias). None
    when the task has fewer than ``MIN_ROWS_FOR_EXEMPLARS`` rows."""
    candidates = [e for e in examples if (e.rationale or "").strip() and e.label.strip()]
    if len(examples) < MIN_ROWS_FOR_EXEMPLARS:
        return []  # too few rows to spare any
    candidates.sort(key=lambda e: hashlib.sha256(e.id.encode()).hexdigest())
    picked, positions, labels = [], set(), set()
    for strict in (True, False):
        for example in candidates:
            if len(picked) == count:
                return picked
            position, label = _gold_position(example), example.label.lower()
            if example in picked or (strict and (position in positions or label in labels)):
                continue
            picked.append(example)
            positions.add(position)
            labels.add(label)
    return picked


def _exemplar_answer_text(example) -> str:
    choices = example.choices or choices_in_input(example.input)
    position = _gold_position(example)
    # The choice's text, no letter: a small model's letters follow the exemplars' positions.
    answer = choices[position] if position >= 0 else example.label.strip()
    rationale = " ".join(example.rationale.split())
    return f"{rationale} {COT_ANSWER_PHRASE} {answer}."


def exemplar_prompt_text(exemplars: list) -> str:
    """A prompt file's text whose worked exemplars are the user's own rows (see ``pick_exemplars``)."""
    multiple_choice = any(e.choices or choices_in_input(e.input) for e in exemplars)
    ending = f"{COT_ANSWER_PHRASE} <the text of the right choice>." if multiple_choice else f"{COT_ANSWER_PHRASE} <answer>."
    blocks = [f"Answer each question. First explain your reasoning in one or two sentences, then end with: {ending}"]
    blocks += [f"Q: {e.input.strip()}\nA: {_exemplar_answer_text(e)}" for e in exemplars]
    blocks.append("Q: {input}\nA:")
    return "\n---\n".join(blocks) + "\n"


def format_question(task: str, text: str) -> str:
    """The example input as the prompt shows it; NLI ``premise</s>hypothesis`` inputs (the paper's
    student format) become ``Premise: ...\\nHypothesis: ...`` lines."""
    if task in NLI_TASKS and "Premise:" not in text:
        for separator in ("</s>", "\n"):
            if separator in text:
                premise, hypothesis = text.split(separator, 1)
                return f"Premise: {premise.strip()}\nHypothesis: {hypothesis.strip()}"
        return f"Premise: {text.strip()}"
    return text


def _hint(answer: str) -> str:
    return f"Hint: the correct answer is {answer}. Explain why."


def _exemplar_answer(answer_text: str) -> str:
    match = re.search(r"the answer is\s*(.+?)\.?\s*$", answer_text, re.IGNORECASE | re.DOTALL)
    return match.group(1).strip() if match else ""


def build_query(template: PromptTemplate, task: str, text: str, gold: str = "",
                rationalize: bool = False) -> str:
    """The last user turn for one example."""
    query = template.query.replace("{input}", format_question(task, text))
    if "{answer}" in query:
        return query.replace("{answer}", gold)
    if rationalize:
        query = f"{query}\n{_hint(gold)}"
    return query


def build_messages(template: PromptTemplate, query: str, rationalize: bool = False) -> list[dict]:
    """Chat messages: exemplars as prior user/assistant turns, the query last."""
    messages: list[dict] = []
    pending = template.instruction
    for exemplar in template.exemplars:
        question = exemplar.question
        if rationalize:
            question = f"{question}\n{_hint(_exemplar_answer(exemplar.answer))}"
        messages.append({"role": "user", "content": f"{pending}\n\n{question}".strip()})
        messages.append({"role": "assistant", "content": exemplar.answer})
        pending = ""
    messages.append({"role": "user", "content": f"{pending}\n\n{query}".strip()})
    return messages


def build_completion(template: PromptTemplate, query: str, rationalize: bool = False) -> str:
    """One plain completion prompt ending in ``A:``."""
    parts = [template.instruction] if template.instruction else []
    for exemplar in template.exemplars:
        question = exemplar.question
        if rationalize:
            question = f"{question}\n{_hint(_exemplar_answer(exemplar.answer))}"
        parts.append(f"{question}\nA: {exemplar.answer}")
    parts.append(f"{query}\nA:")
    return "\n\n".join(parts)


def render_prompt(tokenizer, template: PromptTemplate, task: str, text: str, gold: str = "",
                  rationalize: bool = False) -> list[int]:
    """Token ids of the full prompt for one example (chat template when the tokenizer has one)."""
    query = build_query(template, task, text, gold, rationalize)
    if getattr(tokenizer, "has_chat_template", False) or getattr(tokenizer, "chat_template", None):
        messages = build_messages(template, query, rationalize)
        # A thinking model (Qwen3) would spend the token budget reasoning: off where the template
        # takes the switch (mlx-lm's wrapper turns it on for a vocabulary with <think>; a template
        # without it ignores the variable).
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                               enable_thinking=False)
        return list(tokenizer.encode(prompt, add_special_tokens=False))
    return list(tokenizer.encode(build_completion(template, query, rationalize)))


def stop_token_ids(tokenizer) -> list[int]:
    """EOS ids plus the end-of-turn special tokens the vocabulary has."""
    ids = set(getattr(tokenizer, "eos_token_ids", None) or [])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)


def cut_at_stop(text: str, stops: tuple[str, ...] = STOP_STRINGS) -> tuple[str, bool]:
    """``methods.cut_at_stop`` with the teacher's stop strings by default."""
    return methods.cut_at_stop(text, stops)
