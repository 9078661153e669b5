"""File readers that report problems as ``file:line``, and split helpers."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mlx_distill.data.records import Row
from mlx_distill.errors import DistillError
from mlx_distill.files import complete_lines

# File-name stems accepted for each split, in order of preference.
SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}


def decode_utf8(path: Path, data: bytes) -> str:
    """``data`` (the bytes of ``path``) as text, a leading byte-order mark dropped; DistillError
    naming ``file:line`` when it is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DistillError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
                           "save the file as UTF-8") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DistillError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_jsonl(path: Path, tolerate_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line of a JSONL file.

    A bad line is an error naming ``file:line``. With ``tolerate_torn_tail`` (a rationale cache,
    never a user's data file), a last line without a newline that does not parse (a writer was
    killed mid-line) is skipped instead.
    """
    data = _read_bytes(path)
    whole = complete_lines(data)  # a last line without its newline is handled below
    if tolerate_torn_tail:
        text = decode_utf8(path, whole) + data[len(whole):].decode("utf-8", errors="replace")
    else:
        text = decode_utf8(path, data)
    end = text.rfind("\n") + 1
    lines, tail = text[:end].split("\n")[:-1], text[end:]
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, _parse_json_line(path, number, line)
    if tail.strip():
        if tolerate_torn_tail and not _is_json(tail):
            return  # the torn last line of a killed writer
        yield len(lines) + 1, _parse_json_line(path, len(lines) + 1, tail)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _parse_json_line(path: Path, number: int, line: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        hint = " (a JSON array? write one object per line)" if line.lstrip().startswith("[") else ""
        raise DistillError(f"{path}:{number}: broken JSON line ({exc.msg}){hint}; "
                           "fix or remove the line") from None
    if not isinstance(row, dict):
        raise DistillError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
    return row


def read_json_array(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each element of a JSON array file."""
    text = decode_utf8(path, _read_bytes(path))
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if text[pos:pos + 1] != "[":
        raise DistillError(f"{path}:1: expected a JSON array of records")
    pos, line, counted = _skip_space(text, pos + 1), 1, 0
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DistillError(f"{path}:{exc.lineno}: broken JSON ({exc.msg}); fix the file") from None
        if not isinstance(obj, dict):
            raise DistillError(f"{path}:{line}: expected a JSON object, got {type(obj).__name__}")
        yield line, obj
        pos = _skip_space(text, end)
        if text[pos:pos + 1] == ",":
            pos = _skip_space(text, pos + 1)
        elif text[pos:pos + 1] != "]":
            bad_line = text.count("\n", 0, pos) + 1
            raise DistillError(f"{path}:{bad_line}: broken JSON (expected ',' or ']'); fix the file")
    if pos >= len(text):
        raise DistillError(f"{path}:{text.count(chr(10)) + 1}: broken JSON (array not closed); fix the file")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def read_csv(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield ("file:line", row dict) for each record of a CSV file with a header line.

    Strict, so that no value lands silently in the wrong column: a header that names a column
    twice, a row with more or fewer fields than the header, and a quote left open at the end of
    the file are each refused with ``file:line``.
    """
    # Decoded whole first, so a non-UTF-8 byte is reported with its line.
    handle = io.StringIO(decode_utf8(path, _read_bytes(path)), newline="")
    with handle:
        reader = csv.reader(handle, strict=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                raise DistillError(f"{path}:1: empty CSV file; the first line must name the columns")
            _check_header(path, header)
            start = reader.line_num + 1
            for fields in reader:
                where = f"{path}:{start}"
                start = reader.line_num + 1
                if not fields or fields == [""]:
                    continue  # a blank line
                if len(fields) != len(header):
                    more = "more" if len(fields) > len(header) else "fewer"
                    raise DistillError(f"{where}: {len(fields)} fields but the header names {len(header)} "
                                       f"columns ({more}); quote a value that holds a comma, e.g. \"a, b\"")
                yield where, dict(zip(header, fields))
        except csv.Error as exc:
            problem = "a quote is never closed" if "unexpected end of data" in str(exc) else str(exc)
            raise DistillError(f"{path}:{start}: broken CSV ({problem}); fix the file") from None


def _check_header(path: Path, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DistillError(f"{path}:1: the header names column {name!r} twice; give each column its own name")
        seen.add(name)


def get_field(rec: Any, name: str, where: str, label: str | None = None, fix: str | None = None) -> Any:
    """``rec[name]``, or a DistillError naming the place, the field and the fix."""
    if not isinstance(rec, dict) or name not in rec:
        raise DistillError(f"{where}: missing field {label or name!r}; {fix or 'add it to every record'}")
    return rec[name]


def require_rows(rows: list, path: Path) -> None:
    """Refuse a file that holds no records."""
    if not rows:
        raise DistillError(f"{path}:1: empty dataset (no records); give a file with examples")


def content_id(text: str, label: str) -> str:
    """A stable id derived from an example's content, for datasets without ids."""
    return "h-" + hashlib.sha1(f"{text}\x1f{label}".encode()).hexdigest()[:12]


def check_unique_ids(rows: list[Row]) -> None:
    """Refuse two examples with the same id (across all splits)."""
    first: dict[str, str] = {}
    for ex, where in rows:
        if ex.id in first:
            raise DistillError(f"{where}: duplicate id {ex.id!r} (first at {first[ex.id]}); ids must be unique")
        first[ex.id] = where


def carve(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Split rows into (rest, carved) with a seeded permutation; each part keeps its order."""
    if fraction <= 0 or not rows:
        return rows, []
    n = max(1, round(len(rows) * fraction))
    if n >= len(rows):
        source = rows[0][1].rsplit(":", 1)[0]
        raise DistillError(f"{source}: only {len(rows)} examples, too few to carve validation/test "
                           "splits; add data or give separate split files")
    chosen = set(np.random.RandomState(seed).permutation(len(rows))[:n].tolist())
    return ([r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen])


def find_one(root: Path, names: list[str], task: str, what: str) -> Path:
    """``root`` itself when it is a file, else the first of ``names`` inside it."""
    if root.is_file():
        return root
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DistillError(f"{root}: {what} not found in this folder; give the {task} file or its folder")


def find_split_file(root: Path, split: str, ext: str, exclude: str | None = None) -> Path | None:
    """The file for ``split`` in a folder: ``<name><ext>`` exactly, else ``*<name>*<ext>``."""
    if root.is_file():
        return root if split == "train" else None
    for name in SPLIT_NAMES[split]:
        exact = root / f"{name}{ext}"
        if exact.is_file():
            return exact
    for name in SPLIT_NAMES[split]:
        matches = sorted(p for p in root.glob(f"*{name}*{ext}")
                         if not (exclude and p.name.startswith(exclude)))
        if matches:
            return matches[0]
    return None


def dev_beside(train_path: Path) -> Path | None:
    """The dev file next to a train file: ``train_rand_split`` -> ``dev_rand_split``, or any dev file."""
    candidate = train_path.with_name(train_path.name.replace("train", "dev"))
    if candidate != train_path and candidate.is_file():
        return candidate
    found = find_split_file(train_path.parent, "validation", train_path.suffix, exclude="cose")
    return found if found is not None and found != train_path else None
