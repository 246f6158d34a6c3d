"""Batch data files: every bad-input case is one clear error (file:line) before the batch
starts; the results file's repair and identity checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configurable_agents.batch.data import open_data
from configurable_agents.batch.results import BatchMeta, ResultsWriter, drop_failed, read_results
from configurable_agents.exceptions import InputError

FIELDS = ["topic", "n", "article"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def messages(exc: pytest.ExceptionInfo[InputError]) -> list[str]:
    return [str(i) for i in exc.value.issues]


def test_jsonl_rows_map_and_skip_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"topic": "a", "n": 2}\n\n{"subject": "b", "x": 1}\n')
    data = open_data(str(path), FIELDS, mapping={"topic": "subject"})
    rows = list(data.rows())
    # --map topic=subject: the first row has no 'subject' (its topic is ignored), the second has
    assert [(r.index, r.key, r.values, r.line) for r in rows] == [
        (0, 0, {"n": 2}, 1),
        (1, 1, {"topic": "b"}, 3),
    ]


def test_csv_empty_cells_are_absent_and_ids_are_used(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "id,topic,n,expected\nr1,bees,,x\nr2,ants,3,y\n")
    data = open_data(str(path), FIELDS, id_field="id", required=["topic"])
    rows = list(data.rows())
    assert [(r.key, r.values, r.line) for r in rows] == [
        ("r1", {"topic": "bees"}, 2),
        ("r2", {"topic": "ants", "n": "3"}, 3),
    ]
    assert data.count == 2 and len(data.sha256) == 64


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"topic": ["a", "b"], "n": [1, 2]}), path)
    rows = list(open_data(str(path), FIELDS).rows())
    assert [r.values for r in rows] == [{"topic": "a", "n": 1}, {"topic": "b", "n": 2}]
    assert open_data(str(path), FIELDS).where(rows[1]).endswith(": row 1")


def test_stdin(tmp_path: Path) -> None:
    import io

    stream = io.BytesIO(b'{"topic": "a"}\n{"topic": "b"}\n')
    data = open_data("-", FIELDS, stdin=stream)
    assert data.name == "<stdin>" and [r.values["topic"] for r in data.rows()] == ["a", "b"]
    data.close()
    assert not data.path.exists()


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "expected"),
    [
        ("missing.jsonl", None, {}, ["missing.jsonl: data file not found"]),
        ("d.jsonl", "", {}, ["d.jsonl: the data file holds no rows"]),
        ("d.csv", "", {}, ["d.csv: the data file is empty (no CSV header)"]),
        ("d.csv", "a,b\n1,2\n", {}, ["d.csv:1: no column of the data names a state field"]),
        (
            "d.jsonl",
            '{"topic": "a"}\n{"topic": \n[1]\n',
            {},
            [
                "d.jsonl:2: invalid JSON: Expecting value (column 10)",
                "d.jsonl:3: a line must hold a JSON object, not list",
            ],
        ),
        (
            "d.jsonl",
            '{"id": 1, "topic": "a"}\n{"id": 2, "topic": "b"}\n{"id": 1, "topic": "c"}\n',
            {"id_field": "id"},
            ["d.jsonl:3: row id 1 is used twice (first at line 1)"],
        ),
        (
            "d.jsonl",
            '{"id": "x", "topic": "a"}\n{"topic": "b"}\n',
            {"id_field": "id"},
            ["d.jsonl:2: the row has no id field 'id'"],
        ),
        (
            "d.csv",
            "topic,n\na,1\nb\n",
            {},
            ["d.csv:3: the row has 1 value(s), the header 2"],
        ),
        (
            "d.csv",
            "n,x\n1,2\n",
            {"required": ["topic"]},
            ["d.csv:1: required field 'topic' is not in the data (no column 'topic')"],
        ),
        (
            "d.jsonl",
            '{"topic": "a"}\n',
            {"mapping": {"topic": "subject"}},
            ["d.jsonl: --map topic=subject: the data has no column 'subject'"],
        ),
        ("d.txt", "x", {}, ["d.txt: cannot tell the format of 'd.txt' from its name"]),
    ],
)
def test_bad_data_is_one_clear_error(
    tmp_path: Path, name: str, text: str | None, kwargs: dict, expected: list[str]
) -> None:
    path = tmp_path / name
    if text is not None:
        write(path, text)
    with pytest.raises(InputError) as exc:
        open_data(str(path), FIELDS, **kwargs)
    got = [m.splitlines()[0].replace(str(tmp_path) + "/", "") for m in messages(exc)]
    assert got == expected


def test_map_to_an_unknown_field(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"topic": "a"}\n')
    with pytest.raises(InputError, match="'subject' is not a state field"):
        open_data(str(path), FIELDS, mapping={"subject": "topic"})


def line(row: object, status: str = "succeeded") -> dict:
    return {"row": row, "status": status, "outputs": {}, "error": None, "cost_usd": 0.001}


def test_results_writer_and_torn_line_repair(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path)
    writer.write(line(0))
    writer.write(line(1, "failed"))
    writer.close()
    with path.open("ab") as f:
        f.write(b'{"row": 2, "status": "succ')  # a crash in the middle of a write
    found = read_results(path)
    assert found.torn and found.status == {"0": "succeeded", "1": "failed"}
    assert path.read_bytes().endswith(b"\n") and len(path.read_bytes().splitlines()) == 2
    assert drop_failed(path) == 1
    assert [json.loads(x)["row"] for x in path.read_bytes().splitlines()] == [0]


def test_a_bad_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", '{"row": 0, "status": "succeeded"}\nnope\n{"row": 1}\n')
    with pytest.raises(InputError, match="not a result line"):
        read_results(path)


def test_meta_refuses_another_workflow_or_data(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    meta = BatchMeta("b-1", "demo", "/w/a.yaml", "w" * 64, "/d/x.jsonl", "a" * 64, 3)
    meta.write(path)
    old = BatchMeta.read(path)
    assert old == meta
    old.refuse_other(meta, path)  # the same batch: fine
    other = BatchMeta("b-2", "other", "/w/b.yaml", "w" * 64, "/d/y.jsonl", "b" * 64, 3)
    with pytest.raises(InputError) as exc:
        old.refuse_other(other, path)
    text = "\n".join(messages(exc))
    assert "belongs to workflow 'demo'" in text and "another data file" in text
