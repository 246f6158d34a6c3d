"""Batch data: JSONL, CSV, Parquet, or JSONL on stdin, as rows of run inputs.

``open_data`` reads the whole file once before the batch starts and raises one ``InputError``
with every problem it finds (``file:line`` for JSONL and CSV, ``file: row N`` for Parquet):
a missing or empty file, malformed JSON lines, a CSV header naming no state field, a
``--map`` to a column the data does not have, a row id missing or used twice. What it cannot
know before running (a value that does not fit its field's type, a required field missing in
some rows) makes that row fail with the reason. ``DataSet.rows()`` then streams the rows again,
so memory does not grow with the file.

Columns map to state fields by name, or ``--map field=column``; other columns are ignored (a
data set often carries expected answers next to the inputs). An empty CSV cell and a JSON
``null`` count as absent (the field's default applies). Values are converted as ``--input``
values are (``run.inputs.coerce_inputs``), when the row runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import InputError, Issue, MissingExtraError

MAX_ISSUES = 20  # problems reported at once; the rest are counted
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Row:
    """One data row: its position, its key in the results (``index`` or the id field's
    value), its inputs by state field, and where it is in the file."""

    index: int
    key: Any
    values: dict[str, Any]
    line: int | None = None


@dataclass
class DataSet:
    path: Path  # the file read (a temporary copy for stdin)
    name: str  # as the user gave it ("-" shows as <stdin>)
    kind: str  # jsonl | csv | parquet
    fields: dict[str, str]  # state field -> column
    id_field: str | None
    count: int = 0
    sha256: str = ""
    columns: list[str] = field(default_factory=list)
    _temp: Path | None = None

    def rows(self) -> Iterator[Row]:
        """Every row, in file order (the file was checked by ``open_data``)."""
        for index, (line, record) in enumerate(_records(self)):
            key = index if self.id_field is None else record[self.id_field]
            values = {
                name: record[column]
                for name, column in self.fields.items()
                if column in record and not _absent(record[column])
            }
            yield Row(index, key, values, line)

    def where(self, row: Row) -> str:
        if row.line is not None:
            return f"{self.name}:{row.line}"
        return f"{self.name}: row {row.index}"

    def close(self) -> None:
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None


def _absent(value: Any) -> bool:
    return value is None or value == ""


def row_key(key: Any) -> str:
    """A row's key as a string, to match result lines with data rows."""
    return json.dumps(key, sort_keys=True)


def open_data(
    source: str,
    state_fields: Iterable[str],
    *,
    mapping: Mapping[str, str] | None = None,
    id_field: str | None = None,
    required: Iterable[str] = (),
    stdin: Any = None,
) -> DataSet:
    """Read and check ``source`` (a path, or ``-`` for JSONL on stdin); see the module doc."""
    fields = list(state_fields)
    mapping = dict(mapping or {})
    issues = [
        Issue(
            f"--map {name}=...: '{name}' is not a state field",
            hint="state fields are: " + ", ".join(fields),
        )
        for name in mapping
        if name not in fields
    ]
    if issues:
        raise InputError(issues)
    temp: Path | None = None
    if source == "-":
        temp = Path(tempfile.mkdtemp(prefix="ca-batch-"))
        path = temp / "stdin.jsonl"
        with path.open("wb") as out:
            shutil.copyfileobj(getattr(stdin or sys.stdin, "buffer", stdin or sys.stdin), out)
        name, kind = "<stdin>", "jsonl"
    else:
        path, name = Path(source), source
        if not path.exists():
            raise InputError(Issue("data file not found", file=name))
        if path.is_dir():
            raise InputError(Issue("the data file is a directory", file=name))
        kind = SUFFIXES.get(path.suffix.lower(), "")
        if not kind:
            raise InputError(
                Issue(
                    f"cannot tell the format of {path.name!r} from its name",
                    file=name,
                    hint="name it .jsonl, .csv or .parquet (or pipe JSONL on stdin with --data -)",
                )
            )
    data = DataSet(path, name, kind, {}, id_field, _temp=temp)
    try:
        _check(data, fields, mapping, set(required))
    except BaseException:
        data.close()
        raise
    return data


def _check(data: DataSet, fields: list[str], mapping: dict[str, str], required: set[str]) -> None:
    data.sha256 = _sha256(data.path)
    issues: list[Issue] = []
    extra = 0
    seen: dict[str, int | None] = {}
    columns: dict[str, None] = {}
    count = 0

    def add(issue: Issue) -> None:
        nonlocal extra
        if len(issues) < MAX_ISSUES:
            issues.append(issue)
        else:
            extra += 1

    if data.kind == "csv":
        header = _csv_header(data)
        columns = dict.fromkeys(header)
    elif data.kind == "parquet":
        columns = dict.fromkeys(_parquet_columns(data))
    for index, (line, record) in enumerate(_records(data, add)):
        count += 1
        if data.kind == "jsonl":
            for column in record:
                columns.setdefault(column)
        if data.id_field is not None:
            at = "" if line is not None else f"row {index}: "
            if data.id_field not in record or _absent(record[data.id_field]):
                add(Issue(f"{at}the row has no id field '{data.id_field}'", data.name, line))
                continue
            value = record[data.id_field]
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                add(Issue(f"{at}row id {value!r} is not a string or an integer", data.name, line))
                continue
            key = row_key(value)
            if key in seen:
                first = seen[key]
                before = f"line {first}" if first is not None else "an earlier row"
                add(
                    Issue(
                        f"{at}row id {value!r} is used twice (first at {before})", data.name, line
                    )
                )
            else:
                seen[key] = line
    if count == 0 and not issues:
        add(Issue("the data file holds no rows", file=data.name, hint="add one row per run"))
    data.count = count
    data.columns = list(columns)
    id_not_a_column = data.id_field is not None and data.id_field not in columns
    if count and id_not_a_column and data.kind != "jsonl":
        add(Issue(f"--id-field '{data.id_field}' is not a column", file=data.name, line=1))
    for name, column in mapping.items():
        if count and column not in columns:
            add(
                Issue(
                    f"--map {name}={column}: the data has no column '{column}'",
                    file=data.name,
                    hint="columns are: " + ", ".join(columns),
                )
            )
    data.fields = {name: mapping.get(name, name) for name in fields}
    data.fields = {n: c for n, c in data.fields.items() if c in columns}
    if count and not data.fields and not issues:
        add(
            Issue(
                "no column of the data names a state field",
                file=data.name,
                line=1 if data.kind == "csv" else None,
                hint="state fields are: "
                + ", ".join(fields)
                + "; rename the columns or map them with --map field=column",
            )
        )
    for name in fields:
        column = mapping.get(name, name)
        if count and data.fields and name in required and column not in columns:
            add(
                Issue(
                    f"required field '{name}' is not in the data (no column '{column}')",
                    file=data.name,
                    line=1 if data.kind == "csv" else None,
                    hint=f"add a '{column}' column, or map one with --map {name}=column",
                )
            )
    if extra:
        issues.append(Issue(f"... and {extra} more problem(s)", file=data.name))
    if issues:
        raise InputError(issues)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _ignore(issue: Issue) -> None:
    raise AssertionError(f"the data changed while the batch ran: {issue}")


def _records(data: DataSet, problem: Any = _ignore) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """``(line, record)`` of each row; problems go to ``problem`` (the row is skipped)."""
    if data.kind == "jsonl":
        yield from _jsonl(data, problem)
    elif data.kind == "csv":
        yield from _csv(data, problem)
    else:
        for record in _parquet(data):
            yield None, record


def _jsonl(data: DataSet, problem: Any) -> Iterator[tuple[int | None, dict[str, Any]]]:
    with data.path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except UnicodeDecodeError:
                problem(Issue("the line is not UTF-8 text", file=data.name, line=number))
                continue
            except json.JSONDecodeError as exc:
                problem(
                    Issue(
                        f"invalid JSON: {exc.msg} (column {min(exc.pos, len(raw.rstrip())) + 1})",
                        file=data.name,
                        line=number,
                        hint="each line must be one JSON object",
                    )
                )
                continue
            if not isinstance(record, dict):
                problem(
                    Issue(
                        f"a line must hold a JSON object, not {type(record).__name__}",
                        file=data.name,
                        line=number,
                        hint='e.g. {"topic": "tide pools"}',
                    )
                )
                continue
            yield number, record


def _csv_header(data: DataSet) -> list[str]:
    try:
        with data.path.open(encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise InputError(Issue("the CSV file is not UTF-8 text", file=data.name)) from None
    if not header or not any(h.strip() for h in header):
        raise InputError(
            Issue("the data file is empty (no CSV header)", file=data.name, hint="add a header")
        )
    return [h.strip() for h in header]


def _csv(data: DataSet, problem: Any) -> Iterator[tuple[int | None, dict[str, Any]]]:
    with data.path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
            line = reader.line_num
            for cells in reader:
                start, line = line + 1, reader.line_num
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if len(cells) != len(header):
                    problem(
                        Issue(
                            f"the row has {len(cells)} value(s), the header {len(header)}",
                            file=data.name,
                            line=start,
                        )
                    )
                    continue
                yield start, dict(zip(header, cells, strict=True))
        except csv.Error as exc:
            problem(Issue(f"invalid CSV: {exc}", file=data.name, line=reader.line_num))
        except UnicodeDecodeError:
            problem(Issue("the CSV file is not UTF-8 text", file=data.name))


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("pyarrow", "batch", "reading Parquet data") from None
    return pq


def _parquet_columns(data: DataSet) -> list[str]:
    pq = _pyarrow_parquet()
    try:
        return list(pq.ParquetFile(data.path).schema_arrow.names)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors, for a file it cannot read
        raise InputError(
            Issue(f"not a readable Parquet file: {type(exc).__name__}: {exc}", file=data.name)
        ) from None


def _parquet(data: DataSet) -> Iterator[dict[str, Any]]:
    pq = _pyarrow_parquet()
    for batch in pq.ParquetFile(data.path).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


__all__ = ["DataSet", "Row", "open_data", "row_key"]
