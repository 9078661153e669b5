"""The model card (README.md) of an exported student, from its run's config.toml and metrics.json.

Hugging Face front matter (license, library_name, base_model, datasets, tags, model-index with the
test accuracy), then what the student answers, how to call it, how it was made and how good it is.
Every figure is read from metrics.json (what the run and the export measured); the card measures
nothing and leaves out what was not measured.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mlx_distill.catalog import load_catalog
from mlx_distill.config import RunConfig, load_config
from mlx_distill.files import read_jsonl_records, write_text_atomic
from mlx_distill.methods import RATIONALE_MAX_TOKENS, explain_prompt, predict_prompt
from mlx_distill.pipeline import RunFolder
from mlx_distill.platform import format_bytes

CARD_FILE = "README.md"
TAGS = ["distilling-step-by-step", "mlx-distill", "t5", "text2text-generation"]
# Hub data sets behind the built-in task readers.
TASK_DATASETS = {
    "svamp": ["ChilleD/SVAMP"],
    "cqa": ["tau/commonsense_qa", "Salesforce/cos_e"],
    "esnli": ["esnli/esnli"],
    "anli": ["facebook/anli"],
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id_of(model: str) -> str | None:
    """The hub id a run's model name stands for (a catalog name or a hub id), None for a local folder."""
    entry = load_catalog().find(model)
    if entry is not None:
        return entry.id
    if Path(model).expanduser().exists() or not _HUB_ID.match(model):
        return None
    return model


def card_license(model: str) -> str | None:
    """The ``license`` in a model's own card (a local folder's README.md or the hub cache's), if any."""
    from huggingface_hub import ModelCard, try_to_load_from_cache  # slow to import; only when a card is made

    readme = Path(model).expanduser() / CARD_FILE
    if not readme.is_file():
        hub_id = hub_id_of(model)
        cached = try_to_load_from_cache(hub_id, CARD_FILE) if hub_id else None
        if not isinstance(cached, str):
            return None
        readme = Path(cached)
    try:
        license_name = ModelCard.load(readme).data.license
    except (OSError, ValueError):
        return None
    return str(license_name) if license_name else None


def _percent(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "not measured"


def _first_test_answer(folder: RunFolder) -> tuple[str, str] | None:
    """(question, the run's student's answer) of the first test question the run scored."""
    if not folder.predictions_path.is_file():
        return None
    for record in read_jsonl_records(folder.predictions_path):
        return str(record.get("input", "")), str(record.get("generated", ""))
    return None


def _front_matter(config: RunConfig, accuracy: float | None, name: str, quantized: bool) -> Any:
    from huggingface_hub import EvalResult, ModelCardData

    base_model = hub_id_of(config.train.student)
    results = None
    if accuracy is not None:
        results = [EvalResult(task_type="text2text-generation", dataset_type=config.task.name,
                              dataset_name=config.task.name, dataset_split="test", metric_type="accuracy",
                              metric_name="test accuracy", metric_value=round(float(accuracy), 6))]
    return ModelCardData(
        license=card_license(config.train.student) or "other",
        library_name="mlx" if quantized else "transformers",
        base_model=base_model,
        datasets=TASK_DATASETS.get(config.task.name),
        tags=TAGS + (["mlx", "quantized"] if quantized else []),
        pipeline_tag="text2text-generation",
        model_name=name,
        eval_results=results,
    )


def _snippets(model_ref: str, question: str | None, method: str, quantized: bool, export: dict[str, Any] | None,
              max_tokens: int) -> list[str]:
    question = question or "your question"
    explains = method == "step-by-step"
    lines = ["## How to call it", "",
             f"Put `{predict_prompt('')}` before a question for the answer"
             + (f", and `{explain_prompt('')}` for the student's rationale." if explains else "."), "",
             "With mlx-distill (`pip install mlx-distill`; MLX on Apple silicon or Linux):", "", "```python",
             "from mlx_distill.student import generate, load_student", "",
             f"model, tokenizer = load_student({model_ref!r})",
             f"question = {question!r}",
             f"print(generate(model, tokenizer, [{predict_prompt('')!r} + question], max_tokens={max_tokens})[0])"]
    if explains:
        lines.append(f"print(generate(model, tokenizer, [{explain_prompt('')!r} + question], "
                     f"max_tokens={RATIONALE_MAX_TOKENS})[0])")
    lines += ["```", ""]
    if quantized:
        lines += [f"Only mlx-distill loads this folder (`load_student` above, `mlx-distill ask`, `mlx-distill serve`): "
                  f"its weights are MLX affine-quantized ({export['bits']}-bit, group size {export['group_size']}), "
                  "with `scales` and `biases` beside each packed weight. transformers refuses its quantization "
                  "config and mlx-lm has no T5 model. The float export of the same run (`mlx-distill export RUN`) "
                  "loads in transformers.", ""]
    else:
        lines += ["With transformers:", "", "```python",
                  "from transformers import AutoTokenizer, T5ForConditionalGeneration", "",
                  f"tokenizer = AutoTokenizer.from_pretrained({model_ref!r})",
                  f"model = T5ForConditionalGeneration.from_pretrained({model_ref!r})",
                  f"question = {question!r}",
                  f"inputs = tokenizer({predict_prompt('')!r} + question, return_tensors=\"pt\")",
                  f"print(tokenizer.decode(model.generate(**inputs, max_new_tokens={max_tokens})[0], "
                  "skip_special_tokens=True))",
                  "```", ""]
    return lines


def model_card_text(run_dir: str | Path, model_ref: str, export: str | None = None) -> str:
    """The README.md of a student exported from ``run_dir``.

    Args:
        run_dir: The run folder (its config.toml and metrics.json are read).
        model_ref: What the snippets load: the folder's path, or the hub repo id it is pushed to.
        export: The folder's entry in metrics.json's ``exports`` (written by ``export_student``).

    Returns:
        The card: front matter and Markdown.
    """
    from huggingface_hub import ModelCard  # slow to import; only when a card is made

    folder = RunFolder(Path(run_dir))
    config = load_config(folder.config_path)
    metrics = folder.read_metrics()
    entry = metrics.get("exports", {}).get(export, {}) if export else {}
    quantized = "bits" in entry
    accuracy = entry["test_accuracy"] if quantized else metrics.get("student_test_accuracy")
    name = f"{config.name}-student" + (f"-{entry['bits']}bit" if quantized else "")
    method = metrics.get("student_method", config.train.method)
    chosen = next((c for c in metrics.get("candidates", []) if c.get("chosen")), {})
    alpha = chosen.get("alpha", config.train.trainer.alpha)
    data = metrics.get("data", {})
    teacher = config.teacher.model if config.teacher.enabled else None
    answered = _first_test_answer(folder)
    max_tokens = config.train.for_method(method).answer_max_tokens

    lines = [f"# {name}", "",
             f"A T5 student distilled by [mlx-distill](https://pypi.org/project/mlx-distill/) with "
             f"*Distilling Step-by-Step* (Hsieh et al., 2023, arXiv 2305.02301), method **{method}**"
             + (f", from the teacher `{teacher}`" if teacher else "") + f", on the task **{config.task.name}**.", "",
             "## What it answers", "",
             f"Questions of the task `{config.task.name}`, one at a time, as text; it answers with the label."]
    if answered and not quantized:
        lines += ["", f"A test question and this student's answer: {answered[0]!r} → `{answered[1]}`."]
    lines += [""]
    lines += _snippets(model_ref, answered[0] if answered else None, method, quantized, entry, max_tokens)

    train = metrics.get("train", {})
    teacher_stats = metrics.get("teacher", {})
    teacher_license = card_license(teacher) if teacher else None
    lines += ["## How it was made", "", "| | |", "|---|---|",
              f"| starting checkpoint | `{config.train.student}` |",
              f"| teacher | `{teacher}` (license: {teacher_license or 'see its own model card'}) |" if teacher
              else "| teacher | none (this run did not use one) |",
              f"| method | {method}" + (f", α = {alpha:g}" if method == "step-by-step" else "") + " |",
              f"| rationales from | {config.train.rationale_source} |",
              f"| data | {data.get('train', '?')} train / {data.get('validation', '?')} validation / "
              f"{data.get('test', '?')} test questions |"]
    if teacher_stats:
        lines.append(f"| teacher rationales kept | {teacher_stats.get('accepted', 0)} of "
                     f"{teacher_stats.get('done', 0)} (filter `{config.teacher.filter}`) |")
    if train:
        lines.append(f"| training | {train.get('steps', '?')} steps, best validation accuracy "
                     f"{_percent(train.get('best_validation_accuracy'))} |")

    teacher_test = metrics.get("teacher_test", {})
    lines += ["", "## How good it is", "", "Test accuracy on the run's test questions:", "",
              "| model | test accuracy |", "|---|---|",
              f"| this student | {_percent(accuracy)} |"]
    if quantized:
        lines.append(f"| the float student it was quantized from | {_percent(entry.get('float_test_accuracy'))} |")
    lines.append(f"| teacher | {_percent(teacher_test.get('accuracy')) if teacher_test else 'not measured'} |")
    if metrics.get("candidates"):
        lines += _candidates_lines(metrics)
    else:
        for baseline, values in metrics.get("baselines", {}).items():
            lines.append(f"| baseline `{baseline}` (same student, same data) | {_percent(values.get('test_accuracy'))} |")
    if quantized and entry.get("agreement") is not None:
        lines += ["", f"It gives the same answer as the float student on {_percent(entry['agreement'])} of the "
                      f"{entry.get('test_total', '?')} test questions."]

    lines += ["", "## Size and speed", "", "| | |", "|---|---|"]
    parameters = metrics.get("student_parameters")
    if parameters:
        lines.append(f"| parameters | {parameters:,} |")
    if quantized:
        lines += [f"| weights | {format_bytes(entry['weight_bytes'])} ({entry['bits']}-bit, group size "
                  f"{entry['group_size']}); the float student: {format_bytes(entry['float_weight_bytes'])} |",
                  f"| seconds per answer | {_seconds(entry.get('seconds_per_answer'))}; the float student: "
                  f"{_seconds(entry.get('float_seconds_per_answer'))} (measured together) |"]
    else:
        if entry.get("weight_bytes"):
            lines.append(f"| weights | {format_bytes(entry['weight_bytes'])} ({entry.get('dtype', 'float')}) |")
        lines.append(f"| seconds per answer | {_seconds(metrics.get('student_seconds_per_answer'))} |")
    lines += ["", "Seconds per answer: the median over the first test questions, one question at a time, "
                  "on the machine that made the run.", ""]
    card = ModelCard(f"---\n{_front_matter(config, accuracy, name, quantized).to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def _candidates_lines(metrics: dict[str, Any]) -> list[str]:
    """Why this student: every candidate trained on the same rows, the validation winner, the payoff."""
    lines = ["", "## Why this student", "",
             "The run trained these candidates on the same rows, student, steps and seed, and exported the "
             "one best on the validation split (the test split played no part in the choice):", "",
             "| candidate | best validation | test accuracy |", "|---|---|---|"]
    for entry in metrics["candidates"]:
        mark = " **(this student)**" if entry.get("chosen") else ""
        lines.append(f"| {entry.get('label', entry.get('name'))}{mark} | {_percent(entry.get('best_validation_accuracy'))} "
                     f"| {_percent(entry.get('test_accuracy'))} |")
    selection = metrics.get("selection", {})
    if selection.get("reason"):
        lines += ["", f"Chosen: {selection.get('label')} ({selection['reason']})."]
    payoff = metrics.get("payoff")
    if payoff:
        lines += ["", f"{payoff['verdict']} {payoff['step_by_step_label']}: {_percent(payoff['step_by_step_accuracy'])}, "
                      f"finetune: {_percent(payoff['finetune_accuracy'])}, on the same {payoff['questions']} test "
                      "questions (paired bootstrap)."]
    return lines


def _seconds(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "not measured"


def write_model_card(run_dir: str | Path, folder: str | Path, model_ref: str, export: str | None = None) -> Path:
    """Write ``model_card_text`` to ``folder/README.md``; return its path."""
    path = Path(folder) / CARD_FILE
    write_text_atomic(path, model_card_text(run_dir, model_ref, export))
    return path
