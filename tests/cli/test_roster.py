"""`vrlms-edge import-roster FILE.csv [--dry-run]` and `export-roster` as real subprocesses.

Row-by-row rules are covered in tests/domain/test_roster_csv.py; here: what a person at the
terminal sees (every bad row with file and line), exit codes, all-or-nothing, round trip.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import run_cli

HEADER = "class,nickname,display_name,role,pin,device_id\n"
GOOD = (
    HEADER
    + "Class 5C,mr.stone,Mr Stone,teacher,4321,\n"
    + "Class 5C,lena,Lena K,student,1001,HS-101\n"
    + "Class 5C,omar,Omar B,student,1002,HS-102\n"
    + "Class 6A,ms.moss,Ms Moss,teacher,4322,\n"
    + "Class 6A,lena,Lena K,student,1001,HS-101\n"
)
BAD = (
    HEADER
    + "Class 5C,mr.stone,Mr Stone,teacher,4321,\n"
    + "Class 5C,lena,Lena K,student,12,HS-101\n"
    + "Class 5C,omar,Omar B,pupil,1002,HS-102\n"
    + "Class 5C,mr.stone,Mr Stone 2,student,1003,\n"
    + "Class 5C,zoe,,student,1004,HS-102\n"
)


def _count(data_dir: Path, table: str) -> int:
    with sqlite3.connect(data_dir / "vrlms.sqlite3") as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_bad_file_reports_every_row_and_imports_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    roster = tmp_path / "bad.csv"
    roster.write_text(BAD)
    result = run_cli(data_dir, "import-roster", str(roster))
    assert result.returncode == 1
    # (A first line may say the new database was created.)
    lines = [x for x in result.stderr.splitlines() if x.startswith((str(roster), "vrlms-edge:"))]
    assert lines[:4] == [
        f"{roster}: line 3: PIN must be exactly 4 digits",
        f"{roster}: line 4: bad role 'pupil': teacher or student",
        f"{roster}: line 5: duplicate nickname 'mr.stone' (first on line 2)",
        f"{roster}: line 6: missing display_name",
    ]
    assert lines[4] == "vrlms-edge: 4 bad rows: nothing imported"
    # Nothing written: not even the org an import on an empty box would create.
    assert _count(data_dir, "users") == 0 and _count(data_dir, "orgs") == 0
    missing = run_cli(data_dir, "import-roster", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "No such file" in missing.stderr


def test_dry_run_then_import_then_export_round_trip(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    roster = tmp_path / "roster.csv"
    roster.write_text(GOOD)
    dry = run_cli(data_dir, "import-roster", str(roster), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would import 4 users, 2 new classes, 3 enrollments, 2 headsets" in dry.stdout
    assert _count(data_dir, "users") == 0

    done = run_cli(data_dir, "import-roster", str(roster))
    assert done.returncode == 0, done.stderr
    assert "imported 4 users, 2 new classes, 3 enrollments, 2 headsets" in done.stdout
    assert _count(data_dir, "users") == 4 and _count(data_dir, "enrollments") == 3

    exported = run_cli(data_dir, "export-roster")
    assert exported.returncode == 0, exported.stderr
    without_pins = "".join(
        ",".join(f if i != 4 else "" for i, f in enumerate(line.split(","))) + "\n"
        for line in GOOD.splitlines()
    ).replace("class,nickname,display_name,role,,device_id", HEADER.strip())
    assert exported.stdout == without_pins

    again = run_cli(data_dir, "import-roster", str(roster))
    assert again.returncode == 1
    assert f"{roster}: line 2: nickname 'mr.stone' already exists on this box" in again.stderr
    assert _count(data_dir, "users") == 4
