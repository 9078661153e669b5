"""Task data: each built-in dataset's hub copy or own published files -> train/validation/test ``Example`` lists.

A built-in task reads its Hugging Face hub copy when no path is given (``hub``: fetched once into
the HF cache, then offline); the same row builders read the local files below, so both give the
same examples. ``paper`` reads the paper authors' teacher outputs as a rationale source.

Tasks (``TASKS``):

- ``svamp``: ``SVAMP.json``. Input ``f"{Body}\\n{Question}"`` exactly as the paper's code builds it
  (about a third of the bodies do not end with a period; they are kept as they are), label the
  ``Equation`` string. Train/test = the paper's 800/200 split of
  ``numpy.random.RandomState(0).permutation(n)``; validation is carved from train with ``seed``.
- ``cqa``: CommonsenseQA jsonl (v1.0: 3 choices, v1.11: 5; any number works). Input
  ``question\\nAnswer Choices:\\n(a) c0\\n(b) c1...``, label the choice text, ``Example.choices``
  the choice texts. CoS-E files (``cose_*.jsonl``) beside the data are joined by id as human
  rationales. The dev file is the test split (as in the paper); when only the train file exists,
  test and validation are both carved from it.
- ``esnli``: e-SNLI CSV files; ``anli``: ANLI jsonl (one round folder, or a root with R1/R2/R3).
  NLI input is ``nli_input(premise, hypothesis)`` = ``"Premise: ...\\nHypothesis: ..."``. The paper
  joins the two with the tokenizer's eos token; plain text keeps inputs tokenizer-independent and
  matches the ``Premise:/Hypothesis:`` few-shot format of teacher prompts. Labels are the words
  ``entailment`` / ``neutral`` / ``contradiction``; e-SNLI ``Explanation_1`` and ANLI ``reason``
  are the human rationales.
- ``jsonl`` / ``csv``: a user's own data with ``input``, ``label``, optional ``rationale`` and ``id``
  (names mappable through ``columns``). A folder may hold ``train``/``validation``/``test`` files.

Carved splits are seeded and described in ``TaskData.notes``. A carved test split uses a fixed
seed, so runs with different ``seed`` values are scored on the same test examples.
"""

from __future__ import annotations

import random
from pathlib import Path

from mlx_distill.data.hub import (DEFAULT_DATASETS, HUB_PREFIX, HubSource, default_source, join_cose,
                                  load_hub_task, parse_hub_spec)
from mlx_distill.data.paper import (DSS_ZIP_URL, PAPER_NAMES, PAPER_SOURCES, fetch_paper_archive, load_paper_rationales,
                                    paper_folder, parse_paper_output)
from mlx_distill.data.readers import carve, check_unique_ids, read_csv, read_jsonl
from mlx_distill.data.records import Example, RationaleRecord, TaskData
from mlx_distill.data.tasks import (COLUMN_KEYS, NLI_LABELS, join_human_rationales, load_anli, load_cqa,
                                    load_esnli, load_svamp, load_user, multiple_choice_input, nli_input,
                                    parse_columns)
from mlx_distill.errors import DistillError
from mlx_distill.events import Log, OnEvent, ignore_event

__all__ = ["TASKS", "DEFAULT_DATASETS", "HUB_PREFIX", "HubSource", "default_source", "parse_hub_spec",
           "DSS_ZIP_URL", "PAPER_NAMES", "PAPER_SOURCES", "fetch_paper_archive", "load_paper_rationales", "paper_folder",
           "parse_paper_output", "NLI_LABELS", "COLUMN_KEYS", "Example", "TaskData", "RationaleRecord", "load_task",
           "load_rationales", "read_csv", "nli_input", "multiple_choice_input", "parse_columns"]

TASKS = ("svamp", "cqa", "esnli", "anli", "jsonl", "csv")
CARVED_TEST_FRACTION = 0.1
CARVED_TEST_SEED = 0


def load_task(task: str, path: str | Path | None = None, *, seed: int = 0, validation_fraction: float = 0.1,
              subsample: float = 1.0, columns: dict[str, str] | None = None,
              human_rationales: str | Path | None = None) -> TaskData:
    """Load a task's train/validation/test examples from its own published files.

    Args:
        task: One of ``TASKS``.
        path: The dataset file, a folder holding the dataset's files, or a hub dataset
            (``hf:ORG/NAME[:CONFIG][@REVISION]``, fetched once into the HF cache). Left out (None or
            ""), a built-in task reads its default hub copy (``DEFAULT_DATASETS``).
        seed: Seed for carving validation from train and for ``subsample``.
        validation_fraction: Share of train carved out as validation when the dataset has no
            validation split. Default: ``0.1``.
        subsample: Seeded fraction of the training split to keep (data-size studies); validation
            and test are never subsampled. Default: ``1.0``.
        columns: For ``jsonl``/``csv``: maps ``input``/``label``/``rationale``/``id`` to the names
            used in the files, e.g. ``{"input": "question", "label": "answer"}``.
        human_rationales: A file or folder of human rationales joined by id (CoS-E format with
            ``explanation.open-ended``, or records with ``id`` and ``rationale``), or a hub copy of
            CoS-E (``hf:Salesforce/cos_e:v1.0``). For ``cqa``, CoS-E files beside the data (or,
            from the hub, CoS-E v1.11) are joined without it.

    Returns:
        The task's splits, with ``notes`` saying how they were made.

    Raises:
        DistillError: Unknown task, missing or malformed file (with ``file:line``), empty dataset,
            duplicate ids, unknown NLI label word, or bad arguments.
    """
    if task not in TASKS:
        raise DistillError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    if not 0.0 <= validation_fraction < 1.0:
        raise DistillError(f"validation_fraction {validation_fraction} is outside [0, 1); use e.g. 0.1")
    if not 0.0 < subsample <= 1.0:
        raise DistillError(f"subsample {subsample} is outside (0, 1]; use e.g. 0.5 for half the train set")
    if columns is not None and task not in ("jsonl", "csv"):
        raise DistillError(f"columns (--columns, task.columns) apply to the jsonl and csv tasks only, "
                           f"not {task!r}; leave them out")
    notes: list[str] = []
    source = default_source(task) if not str(path or "").strip() else parse_hub_spec(str(path))
    if source is not None:
        splits = load_hub_task(task, source, notes)
        root = None
    else:
        root = Path(str(path)).expanduser()
        if not root.exists():
            raise DistillError(f"{root}: no such file or folder; give the {task} dataset's file or folder"
                               + (f", or a hub dataset such as {default_source(task).spec}" if task in DEFAULT_DATASETS
                                  else ""))
        if task in ("jsonl", "csv"):
            splits = load_user(root, notes, columns, task)
        else:
            splits = {"svamp": load_svamp, "cqa": load_cqa, "esnli": load_esnli, "anli": load_anli}[task](root, notes)
    # Human rationales: a hub copy of CoS-E (CQA from the hub: v1.11 by default), else files by id.
    hub_rationales = parse_hub_spec(str(human_rationales)) if human_rationales is not None else None
    if hub_rationales is not None or (root is None and human_rationales is None and task == "cqa"):
        splits = join_cose(splits, notes, *([hub_rationales] if hub_rationales is not None else []))
    elif human_rationales is not None or task == "cqa":
        splits = join_human_rationales(root or Path(str(human_rationales)), human_rationales, splits, notes)

    train, validation, test = splits["train"], splits.get("validation"), splits.get("test")
    if test is None:
        train, test = carve(train, CARVED_TEST_FRACTION, CARVED_TEST_SEED)
        notes.append(f"test: {len(test)} examples carved from train (fraction {CARVED_TEST_FRACTION}, "
                     f"fixed seed {CARVED_TEST_SEED}); the dataset has no test split here")
    if validation is None:
        train, validation = carve(train, validation_fraction, seed)
        notes.append(f"validation: {len(validation)} examples carved from train "
                     f"(fraction {validation_fraction}, seed {seed})")
    check_unique_ids([*train, *validation, *test])
    if subsample < 1.0:
        keep = max(1, round(len(train) * subsample))
        chosen = sorted(random.Random(seed).sample(range(len(train)), keep))
        train = [train[i] for i in chosen]
        notes.append(f"train subsampled to {keep} examples (fraction {subsample}, seed {seed})")
    return TaskData(task=task, train=[e for e, _ in train], validation=[e for e, _ in validation],
                    test=[e for e, _ in test], notes=tuple(notes))


def load_rationales(path: str | Path, on_event: OnEvent = ignore_event) -> dict[str, RationaleRecord]:
    """Read a teacher rationale file (JSONL) into records keyed by example id.

    A torn last line (no newline, not valid JSON, as left by a killed writer) is ignored; a bad
    line anywhere else is an error. Each id is used once: when an id appears more than once, the
    LAST record wins, and one warning (a ``Log`` event to ``on_event``) names the file and how many
    lines repeated an id.

    Raises:
        DistillError: The file is missing, a line is not a JSON object, or a record lacks
            ``id``, ``rationale`` or ``answer`` (message has ``file:line``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DistillError(f"{path}: rationale file not found; run the teacher (generate) first "
                           "or give the right --rationales path")
    records: dict[str, RationaleRecord] = {}
    repeated: set[str] = set()
    repeats = 0
    for line_no, row in read_jsonl(path, tolerate_torn_tail=True):
        where = f"{path}:{line_no}"
        for name in ("id", "rationale", "answer"):
            if name not in row:
                raise DistillError(f"{where}: rationale record has no {name!r} field; each line needs "
                                   "at least id, rationale and answer")
        rationale, answer = row["rationale"] or "", row["answer"] or ""
        if not isinstance(rationale, str) or not isinstance(answer, str):
            raise DistillError(f"{where}: 'rationale' and 'answer' must be strings (or null)")
        if str(row["id"]) in records:
            repeats += 1
            repeated.add(str(row["id"]))
        try:
            records[str(row["id"])] = RationaleRecord(
                id=str(row["id"]), rationale=rationale, answer=answer,
                teacher=str(row.get("teacher") or ""), prompt_hash=str(row.get("prompt_hash") or ""),
                raw=str(row.get("raw") or ""), agrees=row.get("agrees"),
                accepted=bool(row.get("accepted", True)), parse_ok=bool(row.get("parse_ok", True)),
                restates_answer=bool(row.get("restates_answer", False)),
                prompt_tokens=int(row.get("prompt_tokens") or 0),
                generated_tokens=int(row.get("generated_tokens") or 0),
                seconds=float(row.get("seconds") or 0.0))
        except (TypeError, ValueError) as exc:
            raise DistillError(f"{where}: bad field value in rationale record ({exc}); "
                               "token counts and seconds must be numbers") from None
    if repeats:
        on_event(Log(f"{path}: {len(repeated)} ids appear more than once ({repeats} repeated lines); "
                     "each id is used once, its last record", level="warning"))
    return records
