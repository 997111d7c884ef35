"""Finding task data files and reading them with line-accurate errors.

Data never lives in this repository: it is found under one of a chain of data roots (explicit
config path, then ``$PEFTBENCH_DATA``, then ``<project root>/../shared/data``). Every failure names
every place searched, so a missing file is fixed from the message alone.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "PEFTBENCH_DATA"
# Project root = the parent of the ``tasks`` package; the shared data sits beside the project.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = PROJECT_ROOT.parent / "shared" / "data"


class DataNotFoundError(FileNotFoundError):
    """Task data found nowhere; ``searched`` lists every place tried, in order."""

    def __init__(self, message: str, searched: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.searched: list[str] = list(searched)

    def __str__(self) -> str:  # FileNotFoundError would otherwise print errno-style tuples
        return str(self.args[0])


class DataFormatError(ValueError):
    """A data file does not have the expected shape; says file, line and what was expected."""

    def __init__(self, path: str | Path, line: int | None, expected: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {expected}")
        self.path = str(path)
        self.line = line
        self.expected = expected


@dataclass(frozen=True)
class DataRoot:
    """One link of the resolution chain, with where it came from (for error messages)."""

    path: Path
    origin: str


def _chain(data_dir: str | None) -> list[DataRoot]:
    """The resolution chain with origins, duplicates removed (first occurrence wins)."""
    raw: list[tuple[str | None, str]] = [
        (data_dir, "data_dir (config)"),
        (os.environ.get(ENV_VAR), f"${ENV_VAR}"),
        (str(DEFAULT_ROOT), "default <project>/../shared/data"),
    ]
    out: list[DataRoot] = []
    seen: set[Path] = set()
    for value, origin in raw:
        if value is None or not str(value).strip():
            continue
        # Relative paths are taken from the current directory (Hydra 1.3 does not chdir by default).
        path = Path(os.path.expandvars(str(value))).expanduser().absolute()
        if path not in seen:
            seen.add(path)
            out.append(DataRoot(path, origin))
    return out


def data_roots(data_dir: str | None) -> list[Path]:
    """Data roots in search order: explicit config path → $PEFTBENCH_DATA → ../shared/data."""
    return [root.path for root in _chain(data_dir)]


def resolve_local(rel: str, data_dir: str | None) -> Path:
    """First ``root/rel`` that exists along the chain; else DataNotFoundError listing them all."""
    return resolve_files(rel, [""], data_dir)[""]


def resolve_files(rel_dir: str, names: Sequence[str], data_dir: str | None) -> dict[str, Path]:
    """Resolve several files of one data set from the *same* root, so splits never mix copies.

    Returns name → absolute path for the first root whose ``rel_dir`` holds every name.
    """
    searched: list[str] = []
    lines: list[str] = []
    for root in _chain(data_dir):
        base = root.path / rel_dir
        paths = {name: (base / name if name else base) for name in names}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if not missing:
            return {name: p.resolve() for name, p in paths.items()}
        searched.extend(missing)
        lines.append(f"  {root.origin}: missing {', '.join(missing)}")
    if not lines:
        lines.append("  (no data root configured)")
    what = f"{rel_dir}/{{{','.join(names)}}}" if any(names) else rel_dir
    msg = (
        f"task data {what!r} not found locally; searched, in order:\n"
        + "\n".join(lines)
        + f"\nset the config data_dir or ${ENV_VAR} to a directory that holds {rel_dir!r}"
    )
    raise DataNotFoundError(msg, searched)


# --------------------------------------------------------------------------------------------------
# Readers. Each yields (line number, row) so that converters can report bad rows precisely.


def read_tsv(
    path: Path, *, header: bool = True, min_columns: int = 1
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line, row) from a GLUE-style tsv.

    ``QUOTE_NONE`` because GLUE sentences contain bare quote characters that the csv default would
    swallow across lines. Rows are keyed by header names, or by column index (``"0"``, ``"1"``, …)
    for header-less files such as CoLA. A leading UTF-8 BOM (MRPC) is dropped.
    """
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        names: list[str] | None = None
        for row in reader:
            line = reader.line_num
            if names is None and header:
                names = [c.strip() for c in row]
                if len(names) < min_columns:
                    raise DataFormatError(path, line, f"a header with at least {min_columns} columns")
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # tolerate blank lines (e.g. a trailing newline pair)
            width = len(names) if names is not None else None
            if width is not None and len(row) != width:
                raise DataFormatError(
                    path, line, f"{width} tab-separated columns ({', '.join(names or [])}), got {len(row)}"
                )
            if len(row) < min_columns:
                raise DataFormatError(
                    path, line, f"at least {min_columns} tab-separated columns, got {len(row)}"
                )
            keys = names if names is not None else [str(i) for i in range(len(row))]
            yield line, dict(zip(keys, row, strict=True))


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, object) from a JSON-lines file; blank lines are skipped."""
    with open(path, encoding="utf-8") as fh:
        for line_no, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, line_no, f"one JSON object per line ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DataFormatError(path, line_no, f"a JSON object, got {type(obj).__name__}")
            yield line_no, obj


def read_json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line where the record starts, object) from a JSON array file (or JSON lines).

    Decoded element by element (``raw_decode``) instead of ``json.load`` so that errors can name
    the line of the offending record, not just its index.
    """
    text = path.read_text(encoding="utf-8-sig")
    start = len(text) - len(text.lstrip())
    if not text[start:].startswith("["):
        yield from read_jsonl(path)
        return
    decoder = json.JSONDecoder()
    counted = [0, 1]  # (position, line at position): newlines are counted incrementally, O(n)

    def line_of(pos: int) -> int:
        last, line = counted
        line += text.count("\n", last, pos)
        counted[:] = [pos, line]
        return line

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip_ws(start + 1)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, exc.lineno, f"a JSON array of objects ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise DataFormatError(path, line_of(pos), f"a JSON object, got {type(obj).__name__}")
        yield line_of(pos), obj
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return
        raise DataFormatError(path, line_of(pos), "',' or ']' after a record in a JSON array")


def require_fields(row: Mapping[str, Any], fields: Sequence[str], path: str | Path, line: int | None) -> None:
    """Raise DataFormatError naming the missing fields of a record."""
    missing = [f for f in fields if f not in row]
    if missing:
        raise DataFormatError(path, line, f"fields {list(fields)}; missing {missing} (have {sorted(row)})")


# --------------------------------------------------------------------------------------------------
# Local-first, hub-second fetching of raw rows; loaders turn the rows into Examples.

SPLIT_KEYS = ("train", "eval")


@dataclass(frozen=True)
class RawRow:
    """One raw record with where it came from, for DataFormatError messages."""

    origin: str  # file path, or "hub:<id>[<split>]"
    line: int | None  # line in the file (hub: 1-based row number)
    row: Mapping[str, Any]


@dataclass(frozen=True)
class RawSplits:
    """Raw rows of the requested splits, from one source."""

    source: str  # "local" | "hub"
    rows: dict[str, list[RawRow]]  # split key ("train", "eval", ...) -> rows in file order
    files: dict[str, str]  # split key -> absolute path read (hub: cache file, else hub id)
    notes: list[str]


Reader = Callable[[Path], Iterator[tuple[int, Mapping[str, Any]]]]


def split_names(task_cfg: Mapping[str, Any]) -> dict[str, str]:
    """Split key -> split (file) name: train and eval always, plus any further eval sets (MNLI-mm)."""
    splits = dict(task_cfg["splits"])
    return {str(k): str(v) for k, v in splits.items() if v}


def fetch_splits(task_cfg: Mapping[str, Any], data_dir: str | None, *, ext: str, read: Reader,
                 splits: Mapping[str, str] | None = None, source: Mapping[str, Any] | None = None) -> RawSplits:
    """Read ``<root>/<source.local>/<split><ext>`` for every split, else the hub, else raise.

    ``splits`` (key -> split name; default: the task's ``splits``) and ``source`` (default: the
    task's) let a loader read one data set out of several, e.g. each train file of a union.
    The hub is tried only when the local files are missing, never when they are malformed: a
    broken local file must be fixed, not silently replaced by a different copy of the data.
    """
    source = task_cfg.get("source") or {} if source is None else source
    splits = split_names(task_cfg) if splits is None else dict(splits)
    local = source.get("local")
    local_error: DataNotFoundError | None = None
    if local:
        names = {key: f"{name}{ext}" for key, name in splits.items()}
        try:
            paths = resolve_files(str(local), sorted(set(names.values())), data_dir)
        except DataNotFoundError as exc:
            local_error = exc
        else:
            rows = {key: [RawRow(str(paths[names[key]]), line, row) for line, row in read(paths[names[key]])]
                    for key in splits}
            files = {key: str(paths[names[key]]) for key in splits}
            return RawSplits("local", rows, files, [])
    return _fetch_hub(task_cfg, source, splits, local_error)


def hub_id(hub: Mapping[str, Any]) -> str:
    """'path/name' of a load_dataset call, for messages and provenance."""
    return "/".join(str(hub[k]) for k in ("path", "name") if hub.get(k))


def _fetch_hub(task_cfg: Mapping[str, Any], source: Mapping[str, Any], splits: Mapping[str, str],
               local_error: DataNotFoundError | None) -> RawSplits:
    """Load from the hub with ``datasets.load_dataset(**source.hub)`` (imported only here)."""
    hub = source.get("hub")
    searched = list(local_error.searched) if local_error else []
    local_part = str(local_error) if local_error else "no source.local configured"
    if not hub:
        raise DataNotFoundError(f"{local_part}\nno source.hub configured to fall back on", searched)
    hub_kwargs = {str(k): v for k, v in hub.items()}
    name = hub_id(hub_kwargs)
    hub_splits = {key: (source.get("hub_splits") or {}).get(key, split) for key, split in splits.items()}
    unreachable = _hub_problem(hub_kwargs)
    if unreachable is not None:   # fail at once: datasets would retry for ~25 s before giving up
        raise DataNotFoundError(
            f"{local_part}\nthen tried the hub for {name}: not reachable ({unreachable}); this task needs the "
            "hub or a local copy", [*searched, f"hub:{name}"])
    try:
        import datasets  # heavy; only on this path

        dsets = datasets.load_dataset(**hub_kwargs)
        chosen = {key: dsets[hub_splits[key]] for key in splits}
    except Exception as exc:  # any hub failure (network, auth, missing split) becomes one message
        raise DataNotFoundError(
            f"{local_part}\nthen tried the hub: datasets.load_dataset({hub_kwargs}) [{name}] "
            f"splits {dict(hub_splits)} failed: {type(exc).__name__}: {exc}",
            [*searched, f"hub:{name}"],
        ) from exc
    rows: dict[str, list[RawRow]] = {}
    files: dict[str, str] = {}
    for key, dset in chosen.items():
        origin = f"hub:{name}[{hub_splits[key]}]"
        rows[key] = [RawRow(origin, i, dict(r)) for i, r in enumerate(dset, start=1)]
        cache = getattr(dset, "cache_files", None) or []
        files[key] = str(Path(cache[0]["filename"]).resolve()) if cache else origin
    notes = [f"data loaded from the Hugging Face hub ({name}), not from local files"]
    return RawSplits("hub", rows, files, notes)


# --------------------------------------------------------------------------------------------------
# Before any compute: is every data set a job needs reachable, locally or on the hub?

_HUB_REACHABLE: dict[str, str | None] = {}


def _hub_problem(hub: Mapping[str, Any]) -> str | None:
    """None when the hub answers for this data set, else why not (cached per data set per process)."""
    repo = str(hub.get("path"))
    if repo not in _HUB_REACHABLE:
        if any(os.environ.get(v, "").strip() not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
            _HUB_REACHABLE[repo] = "offline mode is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
        else:
            try:
                from huggingface_hub import HfApi

                HfApi().dataset_info(repo, timeout=10)
                _HUB_REACHABLE[repo] = None
            except Exception as exc:  # noqa: BLE001 - any failure means "not reachable from here"
                _HUB_REACHABLE[repo] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return _HUB_REACHABLE[repo]


def availability_problem(rel_dir: str | None, names: Sequence[str], hub: Mapping[str, Any] | None,
                         data_dir: str | None, *, what: str) -> str | None:
    """One clear message when neither a local copy nor the hub can provide a data set, else None.

    Cheap (a few stat calls; one hub probe per data set when no local copy exists), so the sweeper
    runs it for every task of a sweep before anything is launched.
    """
    local_msg = "no source.local configured"
    if rel_dir:
        try:
            resolve_files(rel_dir, list(names), data_dir)
            return None
        except DataNotFoundError as exc:
            local_msg = str(exc)
    if hub:
        why = _hub_problem(hub)
        if why is None:
            return None
        return (f"{what}: needs the Hugging Face hub ({hub_id(hub)}) or a local copy, and has neither: "
                f"the hub is not reachable ({why}); {local_msg}")
    return f"{what}: no local copy and no hub source; {local_msg}"
