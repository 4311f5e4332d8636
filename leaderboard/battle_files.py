"""Reading battle files: FastChat ``clean_battle`` JSON lists, JSON Lines, CSV.

Every reader yields ``(model_a, model_b, winner)`` tuples in file order and checks each row as it
goes; a bad row raises BattleFileError carrying the file, the line number and what is wrong. CSV and
JSON Lines are streamed line by line; a JSON list is read whole (those exports are small enough)
but still reports the line on which a bad object starts. Gzip-compressed files are read as is.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Iterator

from leaderboard.engine.outcomes import WINNERS, check_vote

FORMATS = ("auto", "fastchat", "jsonl", "csv")
REQUIRED_COLUMNS = ("model_a", "model_b", "winner")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}

Battle = tuple[str, str, str]


class BattleFileError(ValueError):
    """A battle file that cannot be read, with the line it went wrong on."""

    def __init__(self, path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def _open_binary(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _text_lines(path: Path) -> Iterator[str]:
    """Lines decoded one at a time, so that a decoding error names its own line."""
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BattleFileError(path, number, f"not UTF-8 text: {error.reason} at byte {error.start + 1}") from None
            yield line.removeprefix("\ufeff") if number == 1 else line


def _read_text(path: Path) -> str:
    with _open_binary(path) as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BattleFileError(path, line, f"not UTF-8 text: {error.reason}") from None


def detect_format(path: str | Path) -> str:
    """``csv`` / ``jsonl`` / ``fastchat`` from the extension, else from the first character."""
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    first = ""
    with _open_binary(path) as handle:
        while chunk := handle.read(4096):
            stripped = chunk.removeprefix(b"\xef\xbb\xbf").lstrip()
            if stripped:
                first = chr(stripped[0])
                break
    if first == "[":
        return "fastchat"
    if first == "{":
        return "jsonl"
    if name.endswith(".json"):
        raise BattleFileError(path, 1, "expected a JSON list of battles ('[') or JSON Lines ('{')")
    return "csv"


def read_battles(path: str | Path, format: str = "auto", *, anony_only: bool = False) -> Iterator[Battle]:
    """Battles of a file, in file order. ``anony_only`` keeps votes cast while the models were hidden."""
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    if not path.is_file():
        raise BattleFileError(path, None, "no such file")
    if format == "auto":
        format = detect_format(path)
    reader = {"fastchat": read_fastchat, "jsonl": read_jsonl, "csv": read_csv}[format]
    return reader(path, anony_only=anony_only)


def _checked(path, line: int, model_a, model_b, winner) -> Battle:
    try:
        check_vote(model_a, model_b, winner)
    except ValueError as error:
        raise BattleFileError(path, line, str(error)) from None
    return model_a, model_b, winner


def _from_object(path, line: int, obj, anony_only: bool) -> Battle | None:
    if not isinstance(obj, dict):
        raise BattleFileError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in REQUIRED_COLUMNS if key not in obj]
    if missing:
        raise BattleFileError(path, line, f"missing {', '.join(missing)}")
    if anony_only:
        anony = obj.get("anony")
        if not isinstance(anony, bool):
            raise BattleFileError(path, line, f"'anony' must be true or false to filter on it; got {anony!r}")
        if not anony:
            return None
    return _checked(path, line, obj["model_a"], obj["model_b"], obj["winner"])


def read_jsonl(path: str | Path, *, anony_only: bool = False) -> Iterator[Battle]:
    for line_number, line in enumerate(_text_lines(Path(path)), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise BattleFileError(path, line_number, f"invalid JSON: {error.msg} (column {error.colno})") from None
        battle = _from_object(path, line_number, obj, anony_only)
        if battle is not None:
            yield battle


def read_fastchat(path: str | Path, *, anony_only: bool = False) -> Iterator[Battle]:
    """A JSON list of battle objects (FastChat ``clean_battle`` export)."""
    text = _read_text(Path(path))
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position >= len(text) or text[position] != "[":
        raise BattleFileError(path, _line_of(text, position), "expected a JSON list of battles starting with '['")
    position = _skip_space(text, position + 1)
    line, counted_to = 1, 0
    expect_item = False
    while True:
        if position >= len(text):
            raise BattleFileError(path, _line_of(text, position), "unexpected end of file: the list is not closed with ']'")
        if text[position] == "]" and not expect_item:
            break
        line += text.count("\n", counted_to, position)
        counted_to = position
        try:
            obj, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise BattleFileError(path, error.lineno, f"invalid JSON: {error.msg} (column {error.colno})") from None
        battle = _from_object(path, line, obj, anony_only)
        if battle is not None:
            yield battle
        position = _skip_space(text, end)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)
            expect_item = True
        elif position < len(text) and text[position] == "]":
            expect_item = False
        elif position >= len(text):
            raise BattleFileError(path, _line_of(text, position), "unexpected end of file: the list is not closed with ']'")
        else:
            raise BattleFileError(path, _line_of(text, position), "expected ',' or ']' after a battle")
    if _skip_space(text, position + 1) != len(text):
        raise BattleFileError(path, _line_of(text, _skip_space(text, position + 1)), "unexpected content after the list")


def _skip_space(text: str, position: int) -> int:
    length = len(text)
    while position < length and text[position] in " \t\r\n":
        position += 1
    return position


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def read_csv(path: str | Path, *, anony_only: bool = False) -> Iterator[Battle]:
    """CSV with a header naming model_a, model_b and winner (other columns are ignored)."""
    reader = csv.reader(_text_lines(Path(path)))
    try:
        header = next(reader)
    except StopIteration:
        raise BattleFileError(path, 1, "empty file: expected a header with model_a, model_b, winner") from None
    except csv.Error as error:
        raise BattleFileError(path, 1, f"unreadable CSV: {error}") from None
    columns = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if anony_only and "anony" not in columns:
        missing.append("anony")
    if missing:
        raise BattleFileError(
            path, reader.line_num, f"header lacks column(s) {', '.join(missing)}; found {', '.join(columns)}"
        )
    col_a, col_b, col_w = (columns.index(name) for name in REQUIRED_COLUMNS)
    col_anony = columns.index("anony") if anony_only else -1
    width = max(col_a, col_b, col_w, col_anony) + 1
    winners = frozenset(WINNERS)
    try:
        for row in reader:
            if len(row) < width:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                raise BattleFileError(path, reader.line_num, f"expected at least {width} columns, found {len(row)}")
            if anony_only:
                flag = row[col_anony].strip().lower()
                if flag not in _TRUE and flag not in _FALSE:
                    raise BattleFileError(path, reader.line_num, f"'anony' must be true or false; got {row[col_anony]!r}")
                if flag not in _TRUE:
                    continue
            model_a, model_b, winner = row[col_a], row[col_b], row[col_w]
            if winner not in winners or not model_a or not model_b or model_a == model_b:
                _checked(path, reader.line_num, model_a, model_b, winner)
            yield model_a, model_b, winner
    except csv.Error as error:
        raise BattleFileError(path, reader.line_num, f"unreadable CSV: {error}") from None
