"""Run records: one JSON per job, written atomically, read back across schema versions.

A record is the unit of truth: the leaderboard is regenerated from records alone. Writes go to a
temp file in the same directory, are fsync'ed, then renamed over the target, so a reader (or a
skip-if-done check) never sees half a record even if the writer is killed mid-write.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA_VERSION = 1
# pruned: a search trial its study stopped early (harness.trial_report); never ranked, like failed.
STATUSES = ("success", "failed", "cancelled", "pruned")


class RecordError(ValueError):
    """A record file that cannot be read; names the file."""


def write_record(path: Path, record: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in record.items() if k != "schema_version"}}
    if record["run"]["status"] not in STATUSES:
        raise ValueError(f"run.status {record['run']['status']!r} is not one of {STATUSES}")
    data = json.dumps(record, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    return atomic_write(path, data.encode("utf-8"), fsync=True)


def atomic_write(path: Path, data: bytes | Callable[[BinaryIO], None], *, fsync: bool = False) -> Path:
    """Write via a temp file in the same directory + rename: readers see the old file or the new
    one, never half of one. `data` is bytes, or a function that writes to the open binary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_dead_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600; results are shared
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_HOST = socket.gethostname().replace(".", "_").replace("-", "_")


def _sweep_dead_temps(path: Path) -> None:
    """Remove temp files of `path` left by a writer that was killed mid-write (SIGKILL, OOM): only
    this host's, and only when the writing process is gone (a live writer's temp is never touched)."""
    for tmp in path.parent.glob(f".{path.stem}.{_HOST}-*.tmp"):
        pid = tmp.name[len(f".{path.stem}.{_HOST}-"):].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def upgrade(record: dict[str, Any], *, source: str = "<record>") -> dict[str, Any]:
    """Bring a record of any older schema version up to the current one (readers accept all)."""
    version = record.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RecordError(f"{source}: schema_version {version!r} is not a positive integer")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{source}: schema_version {version} is newer than this peftbench "
                          f"({SCHEMA_VERSION}); upgrade peftbench to read it")
    # Version 1 is the first; future upgrades chain here (v1 → v2 → ...).
    return record


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = os.fspath(path)  # a plain str: the leaderboard reads 100k of these, Path objects cost ~20%
    try:
        with open(path, "rb") as fh:
            record = json.loads(fh.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("run"), dict):
        raise RecordError(f"{path}: not a peftbench record (no 'run' block)")
    return upgrade(record, source=path)


def iter_records(results_dir: Path) -> Iterator[dict[str, Any]]:
    records_dir = Path(results_dir) / "records"
    for path in sorted(records_dir.glob("*.json")):
        yield read_record(path)


def success_exists(path: Path) -> bool:
    """True when a readable success record is at path (skip-if-done)."""
    if not Path(path).exists():
        return False
    try:
        return read_record(path)["run"]["status"] == "success"
    except (RecordError, KeyError, OSError):
        return False
