"""Ember's tuning database: MetaSchedule's JSON database plus a manifest.

A database is a directory holding
- ``ember-tuning.json``: format version, TVM version, and the device it was
  tuned on (target triple, CPU or GPU, ISA features, cores);
- ``end-to-end.json``: per model, its latency with default and with tuned
  schedules as `ember tune` last measured it (compile leaves the tuned
  schedules out for a model they made slower);
- ``workloads.json`` and ``records.json``: MetaSchedule's JSON-lines files
  (records are keyed by workload structural hash and TVM target).

Schedules only mean something for the device and TVM version that measured
them, so a database made elsewhere is refused with a message naming both,
never silently used. MetaSchedule appends one line per measured record; a
process killed mid-write leaves at most one truncated last line, which
`open` drops (that record was the one in flight); damage anywhere else is
reported as a corrupt database. Rewrites (repair, merge, prune) go to a
temporary file that is renamed over the old one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember import targets
from ember.errors import EmberError
from ember.fileutil import atomic_write_text

FORMAT_VERSION = 1
MANIFEST = "ember-tuning.json"
WORKLOADS = "workloads.json"
RECORDS = "records.json"
END_TO_END = "end-to-end.json"  # per model: its latency with default and with tuned schedules
SLOWER = 1.02  # tuned end-to-end time over default beyond which the tuned schedules are left out


def tuned_slower(timing: dict[str, float] | None) -> bool:
    """Whether an end-to-end timing ({"default_ms", "tuned_ms"}) found the tuned build slower."""
    return timing is not None and timing["tuned_ms"] > SLOWER * timing["default_ms"]


def model_key(relax_mod, precision: str = "fp32") -> str:
    """A model as lowered for a target (structural hash of its Relax module) and the
    precision its kernels compute in."""
    import tvm_ffi

    key = f"{tvm_ffi.structural_hash(relax_mod) & (1 << 64) - 1:016x}"
    return key if precision == "fp32" else f"{key}-{precision}"


class TuningDBError(EmberError):
    """A tuning database that cannot be used (missing, corrupt, foreign)."""


def fingerprint(target) -> dict[str, Any]:
    """What a schedule's speed depends on: the device and its compiler target."""
    fp: dict[str, Any] = {"triple": target.triple, "mcpu": target.mcpu,
                          "features": sorted(target.all_features) if target.kind == "llvm" else [],
                          "cores": target.num_cores}
    if target.is_host:
        fp["cpu"] = targets.cpu_model()
    return fp


def _same_device(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """A target that names no core count (a cross-compile target) accepts a
    database tuned on a device with any: its code runs on what the device has."""
    if not wanted.get("cores"):
        stored = {**stored, "cores": wanted.get("cores")}
    return stored == wanted


def describe_device(fp: dict[str, Any]) -> str:
    parts = [fp.get("triple", "?")]
    if fp.get("mcpu"):
        parts.append(f"mcpu={fp['mcpu']}")
    if fp.get("cpu"):
        parts.append(repr(fp["cpu"]))
    if fp.get("cores"):
        parts.append(f"{fp['cores']} cores")
    return " ".join(parts)


def _check_lines(path: Path) -> tuple[list[str], bool]:
    """The file's valid JSON lines; True if a truncated last line was dropped."""
    if not path.exists():
        return [], False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TuningDBError(f"corrupt tuning database: cannot read {path.name}: {e}") from None
    lines = text.split("\n")
    complete = lines[:-1]  # text after the last newline was being written
    tail = lines[-1]
    good: list[str] = []
    for i, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            raise TuningDBError(f"corrupt tuning database: {path.name} line {i} is not valid JSON") from None
        good.append(line)
    return good, bool(tail.strip())


@dataclass
class TuningDatabase:
    path: Path
    manifest: dict[str, Any]
    repaired: int = 0

    @classmethod
    def open(cls, path: str | os.PathLike, target=None, create: bool = False) -> "TuningDatabase":
        """Open (or create) a database for `target`; with target None (housekeeping:
        stats, prune) the device and TVM version are not checked."""
        import tvm

        p = Path(path)
        man = p / MANIFEST
        if target is None and create:
            raise ValueError("creating a tuning database needs its target")
        fp = fingerprint(target) if target is not None else None
        if not p.exists():
            if not create:
                raise TuningDBError(f"tuning database {str(p)!r} does not exist (make one with `ember tune`)")
            p.mkdir(parents=True)
        elif not p.is_dir():
            raise TuningDBError(f"tuning database {str(p)!r} is not a directory")
        if not man.exists():
            if any(p.iterdir()):
                raise TuningDBError(f"{str(p)!r} is not an ember tuning database (no {MANIFEST})")
            if not create:
                raise TuningDBError(f"tuning database {str(p)!r} is empty (make one with `ember tune`)")
            manifest = {"format_version": FORMAT_VERSION, "tvm_version": tvm.__version__, "device": fp,
                        "target": target.to_json()}
            atomic_write_text(man, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        try:
            manifest = json.loads(man.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError
        except (OSError, ValueError, UnicodeDecodeError):
            raise TuningDBError(f"corrupt tuning database: {MANIFEST} in {str(p)!r} is unreadable") from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise TuningDBError(f"tuning database {str(p)!r} has format {manifest.get('format_version')!r}; "
                                f"this ember reads format {FORMAT_VERSION}")
        if fp is not None and manifest.get("tvm_version") != tvm.__version__:
            raise TuningDBError(f"tuning database {str(p)!r} was made with TVM {manifest.get('tvm_version')}; "
                                f"this is TVM {tvm.__version__}: its schedules may not apply; tune again")
        if fp is not None and not _same_device(manifest.get("device") or {}, fp):
            raise TuningDBError(f"tuning database {str(p)!r} was tuned on "
                                f"{describe_device(manifest.get('device') or {})}; this target is {describe_device(fp)}")
        db = cls(p, manifest)
        db.repaired = db._repair()
        return db

    def _repair(self) -> int:
        """Drop what a killed run left half-written: only a final line without its newline
        (MetaSchedule appends whole lines; kill -9 can cut the last one). Anything else that
        is wrong is corruption, reported before either file is touched. Returns how many
        lines went."""
        workloads, cut_workload = _check_lines(self.path / WORKLOADS)
        records, cut_record = _check_lines(self.path / RECORDS)
        for i, r in enumerate(records, 1):  # a workload is on disk before any record names it
            index = _workload_index(r)
            if not 0 <= index < len(workloads):
                held = f"holds {len(workloads)} workload{'s' if len(workloads) != 1 else ''}"
                raise TuningDBError(f"corrupt tuning database: {RECORDS} line {i} names workload "
                                    f"{index if index != _BAD_INDEX else 'with no index'}; {WORKLOADS} {held}")
        if cut_workload:
            atomic_write_text(self.path / WORKLOADS, "".join(w + "\n" for w in workloads))
        if cut_record:
            atomic_write_text(self.path / RECORDS, "".join(r + "\n" for r in records))
        return int(cut_workload) + int(cut_record)

    def ms_database(self):
        """The MetaSchedule JSONDatabase over this directory's files."""
        from tvm.s_tir import meta_schedule as ms

        from ember.compiler.backend.tvm.intrinsics import import_tvm_intrinsics, register_all

        # loading replays each record's trace, and traces of int8 kernels name
        # tensor intrinsics: Ember's, and TVM's (its own VNNI search rule)
        register_all()
        import_tvm_intrinsics()
        try:
            return ms.database.JSONDatabase(str(self.path / WORKLOADS), str(self.path / RECORDS),
                                            allow_missing=True)
        except Exception as e:  # TVM raises its own error types for unparsable records
            from ember.errors import first_line

            raise TuningDBError(f"corrupt tuning database {str(self.path)!r}: {first_line(e)}") from None

    def end_to_end(self, model_key: str) -> dict[str, float] | None:
        """What `ember tune` last measured for a model (its key: `model_key`):
        {"default_ms", "tuned_ms"}, or None."""
        try:
            entry = json.loads((self.path / END_TO_END).read_text(encoding="utf-8")).get(model_key)
        except (OSError, ValueError, AttributeError):
            return None  # advisory: a missing or damaged file only means no verdict
        if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("default_ms", "tuned_ms")):
            return entry
        return None

    def record_end_to_end(self, model_key: str, result: dict[str, float]) -> None:
        try:
            table = json.loads((self.path / END_TO_END).read_text(encoding="utf-8"))
            if not isinstance(table, dict):
                table = {}
        except (OSError, ValueError):
            table = {}
        table[model_key] = result
        atomic_write_text(self.path / END_TO_END, json.dumps(table, indent=1, sort_keys=True) + "\n")

    def records(self) -> list[tuple[int, float]]:
        """(workload index, mean seconds) of every measured record."""
        out = []
        for line in _check_lines(self.path / RECORDS)[0]:
            idx, secs = _workload_index(line), _mean_secs(line)
            if secs is not None:
                out.append((idx, secs))
        return out

    def stats(self) -> dict[str, Any]:
        recs = self.records()
        workloads = len(_check_lines(self.path / WORKLOADS)[0])
        best: dict[int, float] = {}
        for idx, secs in recs:
            best[idx] = min(secs, best.get(idx, secs))
        return {"path": str(self.path), "device": describe_device(self.manifest["device"]),
                "tvm_version": self.manifest["tvm_version"], "workloads": workloads, "records": len(recs),
                "tuned_workloads": len(best), "best_total_ms": sum(best.values()) * 1e3}

    def merge_from(self, other: "TuningDatabase") -> int:
        """Add the other database's records (same device and TVM); returns how many."""
        from tvm.s_tir import meta_schedule as ms

        if (other.manifest.get("device"), other.manifest.get("tvm_version")) != \
                (self.manifest.get("device"), self.manifest.get("tvm_version")):
            raise TuningDBError(f"cannot merge: {str(other.path)!r} was tuned on "
                                f"{describe_device(other.manifest['device'])} with TVM {other.manifest.get('tvm_version')}, "
                                f"{str(self.path)!r} on {describe_device(self.manifest['device'])} "
                                f"with TVM {self.manifest.get('tvm_version')}")
        mine, theirs = self.ms_database(), other.ms_database()
        count = 0
        for rec in theirs.get_all_tuning_records():
            wl = mine.commit_workload(rec.workload.mod)
            mine.commit_tuning_record(ms.database.TuningRecord(rec.trace, wl, rec.run_secs, rec.target,
                                                               rec.args_info))
            count += 1
        return count

    def prune(self, keep: int = 1) -> int:
        """Keep the `keep` fastest records per workload; returns how many were dropped."""
        lines = _check_lines(self.path / RECORDS)[0]
        by_workload: dict[int, list[tuple[float, int]]] = {}
        for i, line in enumerate(lines):
            secs = _mean_secs(line)
            by_workload.setdefault(_workload_index(line), []).append((float("inf") if secs is None else secs, i))
        kept = sorted(i for recs in by_workload.values() for _, i in sorted(recs)[:keep])
        atomic_write_text(self.path / RECORDS, "".join(lines[i] + "\n" for i in kept))
        return len(lines) - len(kept)


_BAD_INDEX = 1 << 60


def _workload_index(line: str) -> int:
    try:
        idx = json.loads(line)[0]
        return idx if isinstance(idx, int) and not isinstance(idx, bool) else _BAD_INDEX
    except (ValueError, IndexError, KeyError, TypeError):
        return _BAD_INDEX


def _mean_secs(line: str) -> float | None:
    try:
        secs = json.loads(line)[1][1]
        vals = [float(s) for s in secs]
        return sum(vals) / len(vals) if vals else None
    except (ValueError, IndexError, KeyError, TypeError):
        return None
