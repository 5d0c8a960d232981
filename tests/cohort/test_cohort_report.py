"""pantherseg.cohort.report: rows, totals and cases per hour, CSV and JSON."""

from __future__ import annotations

import csv
import json

from pantherseg.cohort.report import CaseRow, CohortReport, report_stem

from fakes import run_report


def sample_report() -> CohortReport:
    report = CohortReport(
        run_hash="abc",
        task="t1",
        output_dir="/out",
        runner="ray",
        part=(1, 3),
        wall_s=7200.0,
        worker_deaths=1,
        workers=[{"worker": "node:1", "device": "cuda:0"}],
    )
    report.rows = [
        CaseRow(
            "b",
            "/in/b.mha",
            "done",
            output="/out/b.mha",
            seconds=10.0,
            attempts=2,
            stages_s={"read": 1.0, "network": 8.0},
            members_used=["m0", "m1"],
            device="cuda:0",
            worker="node:1",
        ),
        CaseRow(
            "a",
            "/in/a.mha",
            "done",
            output="/out/a.mha",
            seconds=20.0,
            stages_s={"read": 2.0, "network": 16.0},
            members_used=["m0"],
            device="cuda:0",
            worker="node:2",
        ),
        CaseRow("c", "/in/c.mha", "error", error="c.mha: expected a 3D volume, found a 2D image of size [4, 4]."),
        CaseRow("d", "/in/d.mha", "skipped", attempts=0, output="/out/d.mha"),
        CaseRow("e", "/in/e.mha", "worker-died", attempts=3, error="the worker died on each of 3 attempts"),
    ]
    return report


def test_totals_count_statuses_and_cases_per_hour_counts_done_cases_over_wall_time():
    totals = sample_report().totals()
    assert totals["cases"] == 5
    assert (totals["done"], totals["skipped"], totals["error"], totals["worker-died"]) == (2, 1, 1, 1)
    assert totals["cases_per_hour"] == 1.0  # 2 done in 2 hours
    assert totals["case_seconds_mean"] == 15.0
    assert totals["stage_s"]["network"] == 24.0 and totals["stage_s"]["preprocess"] == 0.0
    assert [row.name for row in sample_report().failed] == ["c", "e"]


def test_csv_and_json_are_written_atomically_with_one_row_per_case(tmp_path):
    csv_path, json_path = sample_report().write(report_stem(tmp_path, (1, 3)))
    assert csv_path.name == "cohort_report.part-1-of-3.csv" and json_path.name == "cohort_report.part-1-of-3.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == [csv_path.name, json_path.name]  # no temporary files left
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["name"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert rows[1]["members_used"] == "m0;m1" and rows[1]["network_s"] == "8.000" and rows[1]["attempts"] == "2"
    assert rows[1]["preprocess_s"] == "" and "3D volume" in rows[2]["error"]
    data = json.loads(json_path.read_text())
    assert data["part"] == {"id": 1, "of": 3} and data["runner"] == "ray" and data["run_hash"] == "abc"
    assert data["totals"]["worker_deaths"] == 1
    assert data["cases"][0]["name"] == "a" and data["cases"][0]["stages_s"] == {"read": 2.0, "network": 16.0}


def test_a_whole_cohort_has_one_report_name_and_an_empty_one_reports_zero_throughput(tmp_path):
    assert report_stem(tmp_path, (0, 1)).name == "cohort_report"
    empty = CohortReport(run_hash="h", task="t1", output_dir=str(tmp_path), runner="local")
    assert empty.totals()["cases_per_hour"] == 0.0 and empty.totals()["case_seconds_mean"] is None
    assert empty.summary().startswith("0 case(s): 0 done, 0 skipped, 0 failed")


def test_the_quality_score_review_flag_and_reasons_are_sortable_columns(tmp_path):
    report = sample_report()
    report.rows[0].take_report(
        run_report(quality={"score": 0.3125, "review": True, "reasons": ["members disagree", "noisy"]})
    )
    report.rows[1].take_report(run_report(quality={"score": 0.9, "review": False, "reasons": []}))
    report.rows[3].take_report(run_report(quality=None))  # a report from before quality control: no score
    csv_path, json_path = report.write(report_stem(tmp_path, (0, 1)))
    rows = {row["name"]: row for row in csv.DictReader(csv_path.open())}
    assert (rows["b"]["quality_score"], rows["b"]["review"], rows["b"]["review_reasons"]) == (
        "0.3125",
        "true",
        "members disagree;noisy",
    )
    assert (rows["a"]["quality_score"], rows["a"]["review"]) == ("0.9000", "false")
    assert rows["d"]["quality_score"] == "" and rows["c"]["review"] == ""
    by_score = sorted((r for r in rows.values() if r["quality_score"]), key=lambda r: float(r["quality_score"]))
    assert [r["name"] for r in by_score] == ["b", "a"]
    cases = {case["name"]: case for case in json.loads(json_path.read_text())["cases"]}
    assert cases["b"]["quality_score"] == 0.3125 and cases["b"]["review"] is True
    assert report.totals()["review"] == 1 and "1 flagged for quality review" in report.summary()
