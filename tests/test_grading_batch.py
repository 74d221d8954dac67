"""Batch-level safety of the grader (course_utils.grading.batch): uids that concurrent batches never
share, inputs that are not regular files, names that are not UTF-8, formulas in names, and results
written row by row. No kernel is started here."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time

import pytest

from course_utils.grading.batch import (
    ResultWriter,
    Settings,
    SubmissionResult,
    UidPool,
    csv_text,
    display_name,
    list_submissions,
    processes_of,
    read_input,
    write_results,
)
from course_utils.grading.lesson import SubmissionError, load_lesson

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="uids of other users need root")


@pytest.fixture(scope="module")
def lesson():
    return load_lesson("00_first_look")


def test_concurrent_batches_get_different_uids(tmp_path):
    first, second = (
        UidPool(str(tmp_path / "locks")),
        UidPool(str(tmp_path / "locks")),
    )  # two batches
    uid_a, lock_a = first.acquire()
    uid_b, lock_b = second.acquire()
    assert uid_a != uid_b
    first.release(lock_a)
    uid_c, lock_c = second.acquire()
    assert uid_c == uid_a  # given back, reused
    second.release(lock_b)
    second.release(lock_c)


@root_only
def test_a_uid_with_someone_elses_process_is_never_taken(tmp_path):
    pool = UidPool(str(tmp_path / "locks"), first=61900, count=3)
    busy = subprocess.Popen(["sleep", "60"], user=61900, group=61900)
    try:
        for _ in range(100):
            if processes_of(61900):
                break
            time.sleep(0.05)
        uid, lock = pool.acquire()
        assert uid == 61901  # 61900 has a process this batch did not start: not ours to kill
        pool.release(lock)
    finally:
        busy.kill()
        busy.wait()


def test_the_lock_folder_must_be_private(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(RuntimeError, match="not a private folder"):
        UidPool(str(shared))


@pytest.mark.parametrize(
    "value, shown",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("alice.ipynb", "alice.ipynb"),
        ("a=b", "a=b"),
    ],
)
def test_csv_cells_never_start_a_formula(value, shown):
    assert csv_text(value) == shown


def test_inputs_that_are_not_regular_files_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.ipynb")
    (tmp_path / "real.ipynb").write_text("{}")
    (tmp_path / "link.ipynb").symlink_to(tmp_path / "real.ipynb")
    start = time.monotonic()
    with pytest.raises(SubmissionError, match="not a regular file"):
        read_input(str(tmp_path / "pipe.ipynb"), 1 << 20)
    with pytest.raises(SubmissionError, match="symbolic link"):
        read_input(str(tmp_path / "link.ipynb"), 1 << 20)
    with pytest.raises(SubmissionError, match="refused"):
        read_input(str(tmp_path / "real.ipynb"), 1)
    assert time.monotonic() - start < 5
    assert read_input(str(tmp_path / "real.ipynb"), 1 << 20) == b"{}"
    names = [p.name for p in list_submissions(tmp_path)]
    assert names == ["link.ipynb", "pipe.ipynb", "real.ipynb"]  # each gets a row


def test_names_that_are_not_utf8_and_formulas_are_written(tmp_path, lesson):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.ipynb")
    open(raw, "wb").close()
    (path,) = list_submissions(folder)
    name = display_name(path, folder)
    assert name == "caf\\xe9.ipynb"
    out = tmp_path / "out"
    out.mkdir()
    results = [
        SubmissionResult(name, error="empty file"),
        SubmissionResult("=cmd|' /C calc'!A0", error="-bad"),
        SubmissionResult("surrogate \udce9 that slipped through", error="x"),
    ]
    writer = ResultWriter(lesson, out)
    for result in results:
        writer.add(result)
    writer.close()
    write_results(lesson, results, out, Settings(), 1.0, False, False, seed=1)
    with open(out / "00_first_look.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["submission"] for r in rows] == [
        "caf\\xe9.ipynb",
        "'=cmd|' /C calc'!A0",
        "surrogate \\udce9 that slipped through",
    ]
    assert rows[1]["error"] == "'-bad"
    report = json.loads((out / "00_first_look.json").read_text(encoding="utf-8"))
    assert len(report["submissions"]) == 3


def test_rows_are_on_disk_as_soon_as_they_are_graded(tmp_path, lesson):
    writer = ResultWriter(lesson, tmp_path)
    writer.add(SubmissionResult("alice.ipynb", total=2.0, max_points=2.0))
    # the batch could crash now: alice's row is already on disk, in both files
    with open(tmp_path / "00_first_look.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["submission"], r["total"]) for r in rows] == [("alice.ipynb", "2")]
    lines = (tmp_path / "00_first_look.partial.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["submission"] == "alice.ipynb"
    writer.close()
