"""The tuning database: manifest checks, crash repair, corruption, housekeeping."""

import json

import onnx
import pytest
from helpers import conv_relu_gemm
import tvm
from ember import cli
from ember.compiler.backend.tvm import schedule
from ember.autotune.database import END_TO_END, MANIFEST, RECORDS, WORKLOADS, TuningDatabase, TuningDBError
from tvm import te
from tvm.s_tir import meta_schedule as ms

from ember import targets


def _commit(db: TuningDatabase, n: int, secs: list[float]) -> None:
    """Commit one record per time in `secs` for n distinct toy workloads."""
    mdb = db.ms_database()
    target = targets.host().tvm_target()
    for i in range(n):
        x = te.placeholder((4, 16 * (i + 1)), name="x")
        y = te.compute(x.shape, lambda a, b: x[a, b] + 1.0, name="y")
        func = te.create_prim_func([x, y])
        sch = schedule.default_schedule(func)
        wl = mdb.commit_workload(tvm.IRModule({"main": func}))
        for s in secs:
            mdb.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, [s], target,
                                                              ms.arg_info.ArgInfo.from_prim_func(func)))


@pytest.fixture
def db(tmp_path):
    d = TuningDatabase.open(tmp_path / "db", targets.host(), create=True)
    _commit(d, 2, [3e-5, 1e-5, 2e-5])
    return d


def test_create_stats_prune(db):
    st = db.stats()
    assert (st["workloads"], st["records"], st["tuned_workloads"]) == (2, 6, 2)
    assert st["best_total_ms"] == pytest.approx(0.02)
    assert db.prune(keep=1) == 4
    assert TuningDatabase.open(db.path, targets.host()).stats()["records"] == 2
    assert sorted(s for _, s in db.records()) == pytest.approx([1e-5, 1e-5])


def test_truncated_tail_from_a_killed_run_is_dropped(db):
    with open(db.path / RECORDS, "a") as f:
        f.write('[1,[[[["GetSBlock"')  # a kill -9 in the middle of MetaSchedule's append
    again = TuningDatabase.open(db.path, targets.host())
    assert again.repaired == 1 and again.stats()["records"] == 6
    again.ms_database()  # TVM accepts the repaired files


def _files(db):
    return {name: (db.path / name).read_bytes() for name in (WORKLOADS, RECORDS)}


@pytest.mark.parametrize("damage", ["workload line deleted", "workloads emptied", "index out of range",
                                    "index not a number"])
def test_damage_other_than_a_cut_tail_is_corruption_and_nothing_is_rewritten(db, damage):
    """Only a final line without its newline is what a killed run leaves; a record naming a
    workload the file does not hold is damage: one error line, both files left as they are."""
    workloads = (db.path / WORKLOADS).read_text().splitlines()
    records = (db.path / RECORDS).read_text().splitlines()
    if damage == "workload line deleted":
        (db.path / WORKLOADS).write_text(workloads[0] + "\n")
    elif damage == "workloads emptied":
        (db.path / WORKLOADS).write_text("")
    else:
        rec = json.loads(records[2])
        rec[0] = 7 if damage == "index out of range" else "one"
        records[2] = json.dumps(rec)
        (db.path / RECORDS).write_text("\n".join(records) + "\n")
    before = _files(db)
    with pytest.raises(TuningDBError, match=r"corrupt tuning database: records.json line \d+ names workload") as e:
        TuningDatabase.open(db.path, targets.host())
    assert "\n" not in str(e.value)
    assert _files(db) == before


def test_corrupt_line_is_an_error(db):
    lines = (db.path / RECORDS).read_text().splitlines()
    lines[1] = lines[1][:20]
    (db.path / RECORDS).write_text("\n".join(lines) + "\n")
    with pytest.raises(TuningDBError, match="records.json line 2 is not valid JSON"):
        TuningDatabase.open(db.path, targets.host())


def test_foreign_database_is_refused(db):
    man = json.loads((db.path / MANIFEST).read_text())
    man["device"]["cpu"] = "Some Other CPU"
    (db.path / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(TuningDBError, match="tuned on .*Some Other CPU.*this target is"):
        TuningDatabase.open(db.path, targets.host())
    arm = targets.parse("aarch64-linux-gnu")
    with pytest.raises(TuningDBError, match="aarch64"):
        TuningDatabase.open(db.path, arm)
    man["device"] = TuningDatabase.open(db.path).manifest["device"]
    man["tvm_version"] = "0.1.0"
    (db.path / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(TuningDBError, match="made with TVM 0.1.0"):
        TuningDatabase.open(db.path, targets.host())


def test_device_core_count(tmp_path):
    """A database tuned on a 4-core device serves a cross-compile target that
    names no core count, but not a target naming 8 cores."""
    four = targets.parse("aarch64-linux-gnu", mcpu="cortex-a72", num_cores=4)
    TuningDatabase.open(tmp_path / "db", four, create=True)
    TuningDatabase.open(tmp_path / "db", targets.parse("aarch64-linux-gnu", mcpu="cortex-a72"))
    with pytest.raises(TuningDBError, match="4 cores.*this target is .*8 cores"):
        TuningDatabase.open(tmp_path / "db", targets.parse("aarch64-linux-gnu", mcpu="cortex-a72", num_cores=8))


def test_not_a_database(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("x")
    with pytest.raises(TuningDBError, match="not an ember tuning database"):
        TuningDatabase.open(tmp_path / "stuff", targets.host())
    with pytest.raises(TuningDBError, match="does not exist"):
        TuningDatabase.open(tmp_path / "missing", targets.host())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("{nope")
    with pytest.raises(TuningDBError, match="unreadable"):
        TuningDatabase.open(tmp_path / "bad", targets.host())


def test_merge(tmp_path, db):
    other = TuningDatabase.open(tmp_path / "other", targets.host(), create=True)
    _commit(other, 1, [5e-6])
    assert db.merge_from(other) == 1
    assert TuningDatabase.open(db.path, targets.host()).stats()["records"] == 7


def test_cli_db_commands(tmp_path, db, capsys):
    assert cli.main(["db", "stats", str(db.path)]) == 0
    assert "2 workloads, 6 records" in capsys.readouterr().out
    assert cli.main(["db", "prune", str(db.path), "--keep", "2"]) == 0
    assert "dropped 2 records" in capsys.readouterr().out
    (db.path / RECORDS).write_text("garbage\n")
    assert cli.main(["db", "stats", str(db.path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt tuning database" in err
    onnx.save(conv_relu_gemm(), str(tmp_path / "m.onnx"))
    assert cli.main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a"), "--db", str(tmp_path / "nodb"),
                     "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nodb' does not exist (make one with `ember tune`)" in err, err


def test_end_to_end_verdicts_are_kept_per_model_and_a_damaged_file_means_none(db):
    assert db.end_to_end("a") is None
    db.record_end_to_end("a", {"default_ms": 1.0, "tuned_ms": 1.5})
    db.record_end_to_end("b", {"default_ms": 2.0, "tuned_ms": 1.0})
    db.record_end_to_end("a", {"default_ms": 1.0, "tuned_ms": 0.9})  # tuned again: the latest timing counts
    assert db.end_to_end("a")["tuned_ms"] == 0.9 and db.end_to_end("b")["tuned_ms"] == 1.0
    (db.path / END_TO_END).write_text("{not json")
    assert db.end_to_end("a") is None  # advisory: never an error
    db.record_end_to_end("c", {"default_ms": 1.0, "tuned_ms": 1.0})
    assert db.end_to_end("c") is not None
