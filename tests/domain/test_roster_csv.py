"""domain/roster_csv.py: every bad row with its line and reason; all or nothing; export."""

from __future__ import annotations

from sqlalchemy import func, select

from vrlms_edge.domain import devices, roster, roster_csv
from vrlms_edge.domain.passwords import verify_secret
from vrlms_edge.store.db import Database
from vrlms_edge.store.models import Class, Device, Enrollment, User

HEADER = "class,nickname,display_name,role,pin,device_id\n"
GOOD = (
    HEADER
    + "7A,ms.green,Ms Green,teacher,4321,\n"
    + "7A,anna,Anna,student,1001,HS-01\n"
    + "7A,ben,Ben,student,1002,HS-02\n"
    + "7B,mr.brown,Mr Brown,teacher,4322,\n"
    + "7B,anna,Anna,student,1001,HS-01\n"
    + ",carl,Carl,student,1003,\n"
)


async def _count(db: Database, model: type) -> int:
    async with db.read() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_good_file_imports_in_one_go_and_exports_back(database: Database) -> None:
    org = await roster.get_or_create_org(database, "school", "School")
    await roster.create_class(database, org.id, "7B")  # an existing class gets its teacher
    await devices.register_device(database, org.id, "HS-02")  # a pending headset is taken
    dry = await roster_csv.import_roster(database, org.id, GOOD, dry_run=True)
    assert (dry.errors, dry.applied) == ([], False)
    assert (dry.users, dry.classes_created, dry.enrollments, dry.devices) == (5, 1, 3, 2)
    assert await _count(database, User) == 0
    report = await roster_csv.import_roster(database, org.id, GOOD)
    assert report.applied and report.errors == []
    classes = {c.name: c for c in (await roster.list_classes(database, org.id)).classes}
    assert classes["7A"].teacher is not None and classes["7A"].teacher.nickname == "ms.green"
    assert [s.nickname for s in classes["7A"].students] == ["anna", "ben"]
    assert classes["7B"].teacher is not None and classes["7B"].teacher.nickname == "mr.brown"
    assert [s.nickname for s in classes["7B"].students] == ["anna"]
    hs = await devices.get_device(database, org.id, "HS-02")
    assert hs.status == "approved" and hs.bound_user is not None
    assert hs.bound_user.nickname == "ben"
    anna = await roster.find_user(database, org.id, "anna")
    async with database.read() as s:
        row = await s.get(User, anna.id)
    assert row is not None and verify_secret("1001", row.pin_hash)

    exported = await roster_csv.export_roster(database, org.id)
    expected = (
        HEADER
        + "7A,ms.green,Ms Green,teacher,,\n"
        + "7A,anna,Anna,student,,HS-01\n"
        + "7A,ben,Ben,student,,HS-02\n"
        + "7B,mr.brown,Mr Brown,teacher,,\n"
        + "7B,anna,Anna,student,,HS-01\n"
        + ",carl,Carl,student,,\n"
    )
    assert exported == expected


async def test_every_bad_row_is_reported_and_nothing_written(database: Database) -> None:
    org = await roster.get_or_create_org(database, "school", "School")
    await roster.create_user(database, org.id, "student", "taken", "Taken", pin="1111")
    blocked = await devices.register_device(database, org.id, "HS-BLOCKED")
    from vrlms_edge.live.clock import ServerClock

    await devices.block_device(database, org.id, blocked.id, now=ServerClock().now())
    bad = (
        HEADER
        + "7A,ok1,Okay One,student,1001,HS-1\n"  # 2: fine
        + "7A,,No Nick,student,1002,\n"  # 3
        + "7A,pin3,Pin Three,student,123,\n"  # 4
        + "7A,pin5,Pin Five,student,12345,\n"  # 5
        + "7A,role,Role,wizard,1005,\n"  # 6
        + "7A,ok1,Okay Again,student,1001,\n"  # 7 duplicate nickname (differs)
        + "7A,dev,Dev,student,1007,HS-1\n"  # 8 duplicate device id
        + "7A,taken,Taken,student,1008,\n"  # 9 exists in the database
        + "7A,boss,Boss,admin,1009,\n"  # 10 admins are not imported
        + "7A,short,Short,student\n"  # 11 too few fields
        + "7A,blk,Blk,student,1011,HS-BLOCKED\n"  # 12 blocked headset
        + "7A,t1,T One,teacher,2001,\n"  # 13 fine
        + "7A,t2,T Two,teacher,2002,\n"  # 14 second teacher for 7A
        + "7A,bad nick,Bad,student,1014,\n"  # 15
        + "\n"  # 16 blank lines are skipped
        + "7A,nopin,No Pin,student,,\n"  # 17
    )
    report = await roster_csv.import_roster(database, org.id, bad)
    lines = {e.line: e.reason for e in report.errors}
    assert sorted(lines) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 17]
    assert "missing nickname" in lines[3]
    assert "4 digits" in lines[4] and "4 digits" in lines[5]
    assert "bad role 'wizard'" in lines[6]
    assert "duplicate nickname 'ok1' (first on line 2)" in lines[7]
    assert "duplicate device_id 'HS-1' (first on line 2)" in lines[8]
    assert "already exists" in lines[9]
    assert "users add" in lines[10]
    assert "expected 6 fields" in lines[11]
    assert "blocked" in lines[12]
    assert "already has teacher 't1'" in lines[14]
    assert "nickname must be" in lines[15]
    assert "missing pin" in lines[17]
    assert not report.applied
    assert await _count(database, User) == 1
    assert await _count(database, Class) == 0
    assert await _count(database, Enrollment) == 0
    assert await _count(database, Device) == 1


async def test_header_problems_are_reported_on_line_one(database: Database) -> None:
    org = await roster.get_or_create_org(database, "school", "School")
    report = await roster_csv.import_roster(database, org.id, "klass,nickname,pin\nx,y,1234\n")
    assert len(report.errors) == 1 and report.errors[0].line == 1
    assert "unknown column 'klass'" in report.errors[0].reason
    assert "missing column(s) class, display_name, role, device_id" in report.errors[0].reason
    empty = await roster_csv.import_roster(database, org.id, "")
    assert [e.line for e in empty.errors] == [1]
