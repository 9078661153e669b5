"""The Distilling Step-by-Step authors' own teacher outputs as a rationale source.

The authors published their PaLM-540B and GPT-NeoX-20B few-shot chain-of-thought outputs in
``datasets.zip`` (github.com/google-research/distilling-step-by-step). Unzipped, the folder holds,
per dataset (``cqa``, ``svamp``, ``esnli``, ``anli1``):

- ``datasets/<name>/<name>_<split>.json``: their copy of the dataset (JSON lines), the order the
  outputs follow (``split`` is ``train``, ``valid`` or ``test``);
- ``datasets/<name>/llm/<split>_CoT_<i>.json``: PaLM's outputs, a JSON list of strings per batch
  ``i`` (in order, ``i`` = 0, 1, ...);
- ``datasets/gpt-neox/<name>/<split>.json``: GPT-NeoX's outputs, one JSON list.

Each output is cut and parsed as the authors' ``data_utils.py`` does (CQA: text before the next
``Q:``, rationale before "So the answer is", label the choice text after ``(x)``; SVAMP: before
"The answer is", label the first parenthesised expression; e-SNLI: rationale before ``Answer:``,
label after it up to ``Premise``; ANLI: text before the next ``Premise:``, split at "So the answer
is" (GPT-NeoX also "The answer is"), label without its final period). Outputs are matched to our
examples through the authors' copy: by id (CQA ``id``, ANLI ``uid``), else by the input text.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable

from mlx_distill.data.readers import read_jsonl
from mlx_distill.data.records import Example, RationaleRecord
from mlx_distill.data.tasks import nli_input
from mlx_distill.errors import DistillError
from mlx_distill.metrics import is_correct

PAPER_SOURCES = ("paper-palm", "paper-gpt-neox")
PAPER_NAMES = {"cqa": "cqa", "svamp": "svamp", "esnli": "esnli", "anli": "anli1"}
_PAPER_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
_ANSWER_PHRASES = {"cqa": ("So the answer is",), "svamp": ("The answer is",), "anli": ("So the answer is",)}
_CUT_AT = {"cqa": "Q:", "svamp": "Q:", "anli": "Premise:"}
DSS_ZIP_URL = "https://github.com/google-research/distilling-step-by-step/raw/main/datasets.zip"


def paper_datasets_folder(path: str | Path) -> Path:
    """The ``datasets`` folder of the unzipped archive (``path`` may be it, or the folder holding it)."""
    root = Path(path).expanduser()
    for folder in (root, root / "datasets"):
        if any((folder / name).is_dir() for name in PAPER_NAMES.values()):
            return folder
    raise DistillError(f"{root}: not the unzipped datasets.zip of distilling-step-by-step (no cqa/, svamp/, esnli/ "
                       "or anli1/ folder in it or in its datasets/); unzip the archive and give that folder")


def parse_paper_output(task: str, text: str, source: str = "paper-palm") -> tuple[str, str]:
    """(rationale, label) from one of the authors' teacher outputs; empty strings where it does not parse."""
    if task == "esnli":
        rationale = text.split("Answer:")[0].strip()
        _, found, rest = text.partition("Answer: ")
        return rationale, rest.split("Premise")[0].strip() if found else ""
    text = text.split(_CUT_AT[task])[0].strip()
    phrases = _ANSWER_PHRASES[task] + (("The answer is",) if task == "anli" and source == "paper-gpt-neox" else ())
    phrase = next((p for p in phrases if text.count(p) == 1), None)
    if phrase is None:
        return "", ""
    rationale, rest = (part.strip() for part in text.split(phrase))
    if task == "cqa":
        parts = re.split(r"\(.\)", rest)
        label = parts[1].strip().removesuffix(".") if len(parts) > 1 else ""
    elif task == "svamp":
        match = re.search(r"\(.*\)", rest)
        label = match.group(0) if match else ""
    else:
        label = rest.removesuffix(".")
    return rationale, label


def _outputs(folder: Path, name: str, split: str, source: str) -> tuple[list[str], str]:
    if source == "paper-palm":
        files = sorted((folder / name / "llm").glob(f"{split}_CoT_*.json"),
                       key=lambda p: int(p.stem.rsplit("_", 1)[1]) if p.stem.rsplit("_", 1)[1].isdigit() else -1)
        where = f"{folder / name / 'llm'}/{split}_CoT_<i>.json"
    else:
        files = [f for f in [folder / "gpt-neox" / name / f"{split}.json"] if f.is_file()]
        where = str(folder / "gpt-neox" / name / f"{split}.json")
    if not files:
        raise DistillError(f"{where}: not found; the {source} outputs for this task and split are not in the archive")
    outputs: list[str] = []
    for path in files:
        try:
            batch = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DistillError(f"{path}: not a JSON list of teacher outputs ({error}); "
                               "unzip the archive again") from None
        if not isinstance(batch, list) or not all(isinstance(o, str) for o in batch):
            raise DistillError(f"{path}: expected a JSON list of strings (the teacher's outputs)")
        outputs.extend(batch)
    return outputs, where


def _key(task: str, record: dict[str, Any], where: str) -> str:
    """How a record of the authors' copy finds our example: the id where they kept it, else the input text."""
    try:
        if task == "cqa":
            return str(record["id"])
        if task == "anli":
            return str(record["uid"])
        if task == "esnli":
            return nli_input(str(record["premise"]), str(record["hypothesis"]))
        return str(record["input"])
    except KeyError as missing:
        raise DistillError(f"{where}: missing field {missing}; not the authors' copy of the {task} data") from None


def load_paper_rationales(path: str | Path, task: str, source: str, examples: list[Example], *,
                          split: str = "train", filter: str = "all") -> dict[str, RationaleRecord]:
    """The authors' teacher rationales for ``examples``, as teacher records keyed by our example id.

    Args:
        path: The unzipped ``datasets.zip`` folder (or its ``datasets`` folder).
        task: ``cqa``, ``svamp``, ``esnli`` or ``anli`` (round 1: the archive has only ``anli1``).
        source: ``paper-palm`` or ``paper-gpt-neox``.
        examples: Our examples of ``split``; those the archive has no output for get no record.
        split: ``train``, ``validation`` or ``test``.
        filter: ``all`` keeps every parsed rationale (the paper trains on all of them); ``gold`` (or
            ``teacher``) keeps those whose answer agrees with the gold label.

    Raises:
        DistillError: Not the archive, a task or split it lacks, a broken file, or fewer outputs
            than the authors' copy has examples.
    """
    if source not in PAPER_SOURCES:
        raise DistillError(f"unknown paper rationale source {source!r}; use one of {', '.join(PAPER_SOURCES)}")
    if task not in PAPER_NAMES:
        raise DistillError(f"the paper's rationales exist for {', '.join(PAPER_NAMES)}, not {task!r}")
    folder = paper_datasets_folder(path)
    name, paper_split = PAPER_NAMES[task], _PAPER_SPLITS[split]
    copy = folder / name / f"{name}_{paper_split}.json"
    if not copy.is_file():
        raise DistillError(f"{copy}: not found; the archive has no {split} split of {name}")
    outputs, where = _outputs(folder, name, paper_split, source)
    records = list(read_jsonl(copy))
    if len(outputs) < len(records):
        raise DistillError(f"{where}: {len(outputs)} outputs for the {len(records)} examples of {copy.name}; "
                           "the archive is incomplete, unzip it again")
    ours: dict[str, list[Example]] = {}
    for example in examples:
        ours.setdefault(example.id if task in ("cqa", "anli") else example.input, []).append(example)
    found: dict[str, RationaleRecord] = {}
    for (line, record), output in zip(records, outputs):
        matches = ours.get(_key(task, record, f"{copy}:{line}"))
        if not matches:
            continue
        example = matches.pop(0)
        rationale, label = parse_paper_output(task, output, source)
        agrees = bool(label) and is_correct(task, label, example.label)
        keep = bool(rationale) and bool(label) and (filter == "all" or agrees)
        found[example.id] = RationaleRecord(id=example.id, rationale=rationale, answer=label, teacher=source,
                                            raw=output, agrees=agrees, accepted=keep, parse_ok=bool(label))
    return found


def paper_folder(path: str | Path, cache: Path) -> Path:
    """``path`` (the unzipped archive), or where ``fetch_paper_archive`` puts it under mlx-distill's ``cache``."""
    return Path(path).expanduser() if str(path) else cache / "distilling-step-by-step"


def fetch_paper_archive(dest: Path, url: str = DSS_ZIP_URL,
                        on_progress: Callable[[int, int | None], None] = lambda done, total: None) -> Path:
    """Download the authors' ``datasets.zip`` once and unzip it into ``dest``; the ``datasets`` folder.

    Nothing is left half-written: the archive is downloaded beside ``dest`` and unpacked into a
    temporary folder that is renamed into place when whole.
    """
    target = dest / "datasets"
    if target.is_dir():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / "datasets.zip.part"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                on_progress(done, total)
    except (urllib.error.URLError, OSError) as error:
        part.unlink(missing_ok=True)
        raise DistillError(f"{url}: download failed ({getattr(error, 'reason', error)}); connect and run "
                           "`mlx-distill fetch-data paper-rationales` again, or unzip the archive yourself "
                           "and give its folder as train.paper_rationales") from None
    unpack = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        with zipfile.ZipFile(part) as archive:
            archive.extractall(unpack)
        paper_datasets_folder(unpack).rename(target)
    except zipfile.BadZipFile:
        raise DistillError(f"{url}: the download is not a zip archive; try again later") from None
    finally:
        shutil.rmtree(unpack, ignore_errors=True)
        part.unlink(missing_ok=True)
    return target
