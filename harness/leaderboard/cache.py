"""Incremental reading of results/records/ for the leaderboard.

Parsing 100k record files costs seconds; most regenerations see the same files again. What the
leaderboard needs from one record — its long-table rows (:func:`table.record_rows`, failed runs
included) and the budget's seed count — is cached per file under
``<results>/leaderboards/.cache/records.npz``, keyed by the file's (name, size, mtime_ns):

* an unchanged file is never re-read; a new or changed one is parsed (a bad one raises
  :class:`RecordError` exactly as :func:`records.iter_records` does); a removed one drops out;
* the cache is columnar: a numpy ``.npz`` read with ``allow_pickle=False``, one array per long-table
  column — strings as integer codes into a JSON string table, numbers as int64/float64, a column that
  mixes types (ints and the NaN of failed runs, bools and None) as a per-cell kind plus values — and
  the per-file keys and row offsets (an all-bool column, like ``subtask``, as a bool array). No pickle: the file sits in a shared results tree, and unpickling
  a file someone else can write is code execution; this file can at worst hold wrong data, and it is
  rebuilt whole when it fails to load or is inconsistent. Written atomically (temp file + rename);
* a cold read of many files is spread over a process pool (``jobs``), in sorted chunks, so the
  rows come back in the same order as ``iter_records`` yields records.

The key cannot see a file rewritten with the same size within one mtime tick; record writers
replace files (new inode, new mtime), so in practice every rewrite is seen.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.leaderboard.table import LONG_COLUMNS
from harness.records import atomic_write, read_record

# 4: rows of eval.subtasks records; 5: validation-split (search trial) records never ranked; 6: baseline and
# per-example outcome totals columns; 7: the outcome_key column (a digest of each set's outcomes)
CACHE_VERSION = 7
CACHE_NAME = "records.npz"
POOL_MIN_FILES = 2000  # below this a pool's start-up costs more than it saves
N_COLUMNS = len(LONG_COLUMNS)
_KIND = {type(None): 0, str: 1, bool: 2, int: 3, float: 4}


def cache_path(results_dir: Path) -> Path:
    return Path(results_dir) / "leaderboards" / ".cache" / CACHE_NAME


def _entry(path: str) -> tuple[list[Any] | None, list[tuple[Any, ...]]]:
    """([budget, seeds] | None, rows) of one record file."""
    from harness.leaderboard.table import record_rows

    rec = read_record(path)
    b = ((rec["run"].get("spec") or {}).get("budget")) or {}
    seeds = [b["name"], int(b["seeds"])] if b.get("seeds") and b.get("name") else None
    return seeds, record_rows(rec, include_failed=True)


def _parse_chunk(items: Sequence[str]) -> list[tuple[list[Any] | None, list[tuple[Any, ...]]]]:
    return [_entry(p) for p in items]


def _header() -> dict[str, Any]:
    from harness.leaderboard.table import LONG_COLUMNS

    return {"version": CACHE_VERSION, "columns": LONG_COLUMNS}


# ------------------------------------------------------------------------------------------------
# Column codec: object column (exact Python values) <-> plain numpy arrays + JSON strings
# ------------------------------------------------------------------------------------------------


def _encode(col: np.ndarray, i: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Store object column ``col`` as arrays ``c{i}_*``; return its JSON description."""
    types = set(map(type, col))
    if types <= {str, type(None)}:
        codes, uniq = _factorize(col)
        arrays[f"c{i}_code"] = codes
        return {"kind": "str", "strings": uniq}
    if types == {float}:
        arrays[f"c{i}_f"] = np.array(col, dtype=np.float64)
        return {"kind": "float"}
    if types == {bool}:  # the `subtask` flag: decoded by indexing, not through the mixed path
        arrays[f"c{i}_b"] = np.array(col, dtype=bool)
        return {"kind": "bool"}
    if types == {int}:
        try:
            arrays[f"c{i}_i"] = np.array(col, dtype=np.int64)
            return {"kind": "int"}
        except OverflowError:
            pass
    # mixed: a kind per cell, then the value in the array of its kind
    if not types <= set(_KIND):
        raise TypeError("uncacheable value")
    n = len(col)
    kind = np.fromiter(map(_KIND.__getitem__, map(type, col)), np.int8, n)  # C-level loops, no frames
    fl = np.zeros(n, np.float64)
    it = np.zeros(n, np.int64)
    code = np.full(n, -1, np.int32)
    fl[kind == 4] = col[kind == 4].astype(np.float64)
    ints = (kind == 2) | (kind == 3)
    try:
        it[ints] = col[ints].astype(np.int64)
    except OverflowError:
        raise TypeError("uncacheable value: an int beyond 64 bits") from None
    code[kind == 1], uniq = _factorize(col[kind == 1])
    arrays.update({f"c{i}_kind": kind, f"c{i}_f": fl, f"c{i}_i": it, f"c{i}_code": code})
    return {"kind": "mixed", "strings": uniq}


def _factorize(col: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes into the distinct strings in order of first appearance; None → -1 (pandas' C hash table)."""
    import pandas as pd

    codes, uniq = pd.factorize(col, use_na_sentinel=True)
    return codes.astype(np.int32), [str(u) for u in uniq]


def _decode(desc: dict[str, Any], i: int, z: Any, n: int) -> np.ndarray:
    """The object column of exact Python values back (str/None, int, float, bool)."""
    kind = desc["kind"]
    if kind == "str":
        codes = z[f"c{i}_code"]
        table = np.array([*desc["strings"], None], dtype=object)
        if codes.shape != (n,) or (n and (codes.min() < -1 or codes.max() >= len(table) - 1)):
            raise ValueError("bad codes")
        return table[codes]
    if kind == "float":
        arr = z[f"c{i}_f"]
        if arr.shape != (n,) or arr.dtype != np.float64:
            raise ValueError("bad float column")
        return np.array(arr.tolist(), dtype=object)
    if kind == "bool":
        arr = z[f"c{i}_b"]
        if arr.shape != (n,) or arr.dtype != np.bool_:
            raise ValueError("bad bool column")
        return np.array([False, True], dtype=object)[arr.astype(np.intp)]
    if kind == "int":
        arr = z[f"c{i}_i"]
        if arr.shape != (n,) or arr.dtype != np.int64:
            raise ValueError("bad int column")
        return np.array(arr.tolist(), dtype=object)
    if kind != "mixed":
        raise ValueError("bad kind")
    k, fl, it, code = (z[f"c{i}_{s}"] for s in ("kind", "f", "i", "code"))
    if any(a.shape != (n,) for a in (k, fl, it, code)):
        raise ValueError("bad mixed column")
    strings = desc["strings"]
    if n and (k.min() < 0 or k.max() > 4 or (code[k == 1] < 0).any() or (code[k == 1] >= len(strings)).any()):
        raise ValueError("bad mixed column")
    out = np.full(n, None, dtype=object)
    for kk in (1, 2, 3, 4):
        m = k == kk
        if m.any():
            vals = (np.array(strings, dtype=object)[code[m]] if kk == 1 else it[m].astype(bool).tolist() if kk == 2
                    else it[m].tolist() if kk == 3 else fl[m].tolist())
            sub = np.empty(int(m.sum()), dtype=object)
            sub[:] = vals
            out[m] = sub
    return out


class _Cache:
    """The decoded cache: per file (name → index), size, mtime, row offsets, seeds; object columns."""

    def __init__(self, names: list[str], size: np.ndarray, mtime: np.ndarray, start: np.ndarray,
                 seeds: list[Any], cols: list[np.ndarray]) -> None:
        self.index = {n: k for k, n in enumerate(names)}
        self.names, self.size, self.mtime, self.start, self.seeds, self.cols = names, size, mtime, start, seeds, cols


def _load(path: Path) -> _Cache | None:
    """The cache; None for a missing, unreadable, corrupt, outdated or inconsistent one (then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("header") != _header():
                return None
            names, seeds, descs = meta["names"], meta["seeds"], meta["columns"]
            size, mtime, start = z["size"], z["mtime"], z["start"]
            nf = len(names)
            if (not isinstance(names, list) or not all(isinstance(x, str) for x in names)
                    or not isinstance(seeds, list) or len(seeds) != nf
                    or not all(s is None or (isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
                                             and isinstance(s[1], int)) for s in seeds)
                    or size.shape != (nf,) or mtime.shape != (nf,) or start.shape != (nf + 1,)
                    or not isinstance(descs, list) or len(descs) != N_COLUMNS
                    or start[0] != 0 or (np.diff(start) < 0).any()):
                return None
            n = int(start[-1])
            cols = [_decode(d, i, z, n) for i, d in enumerate(descs)]
            return _Cache(names, size.astype(np.int64), mtime.astype(np.int64), start.astype(np.int64), seeds, cols)
    except Exception:  # noqa: BLE001 - any failure to read it back means: rebuild it
        return None


def _save(path: Path, names: list[str], size: np.ndarray, mtime: np.ndarray, start: np.ndarray,
          seeds: list[Any], cols: list[np.ndarray]) -> None:
    """Atomic write; a results tree we cannot write to (or a value we cannot encode) goes uncached."""
    try:
        arrays: dict[str, np.ndarray] = {"size": np.asarray(size, np.int64), "mtime": np.asarray(mtime, np.int64),
                                         "start": np.asarray(start, np.int64)}
        descs = [_encode(c, i, arrays) for i, c in enumerate(cols)]
        meta = {"header": _header(), "names": names, "seeds": seeds, "columns": descs}
        arrays["meta"] = np.frombuffer(json.dumps(meta, separators=(",", ":")).encode("utf-8"), dtype=np.uint8)
    except (TypeError, ValueError, OverflowError):
        return
    try:
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    except OSError:
        pass


def _pool_context() -> Any:
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


def _object_columns(rows: list[tuple[Any, ...]]) -> list[np.ndarray]:
    out = []
    for c in (zip(*rows) if rows else [()] * N_COLUMNS):
        a = np.empty(len(rows), dtype=object)
        a[:] = list(c)
        out.append(a)
    return out


def read_columns(results_dir: Path, *, jobs: int | None = None,
                 use_cache: bool = True) -> tuple[list[np.ndarray], dict[str, int]]:
    """(one object array per LONG_COLUMNS column, exact Python values, of every record's rows in
    ``iter_records`` order, failed runs included; budget name → seeds)."""
    cols, seeds, _files, _start = _read(results_dir, jobs=jobs, use_cache=use_cache)
    return cols, seeds


def _read(results_dir: Path, *, jobs: int | None,
          use_cache: bool) -> tuple[list[np.ndarray], dict[str, int], list[str], np.ndarray]:
    """`read_columns`, plus the record file names in row order and each file's first row (``start``,
    one more entry than files): row i comes from ``files[k]`` for ``start[k] <= i < start[k + 1]``."""
    records_dir = Path(results_dir) / "records"
    listing: list[tuple[str, int, int]] = []
    with os.scandir(records_dir) as it:
        for d in it:
            if d.name.endswith(".json"):
                st = d.stat()
                listing.append((d.name, st.st_size, st.st_mtime_ns))
    listing.sort()
    cpath = cache_path(results_dir)
    old = _load(cpath) if use_cache else None
    hit = np.full(len(listing), -1, np.int64)  # index into the old cache per listed file
    if old is not None:
        for i, (name, size, mt) in enumerate(listing):
            k = old.index.get(name)
            if k is not None and old.size[k] == size and old.mtime[k] == mt:
                hit[i] = k
    todo = np.flatnonzero(hit < 0).tolist()
    unchanged = old is not None and not todo and len(old.names) == len(listing)
    if unchanged and old.names == [x[0] for x in listing]:
        cols, seeds_list, start = old.cols, old.seeds, old.start
    else:
        parsed: list[tuple[list[Any] | None, list[tuple[Any, ...]]]] = []
        if todo:
            items = [str(records_dir / listing[i][0]) for i in todo]
            jobs = max(1, jobs or os.cpu_count() or 1)
            if jobs > 1 and len(items) >= POOL_MIN_FILES:
                n_chunks = jobs * 4
                step = -(-len(items) // n_chunks)
                chunks = [items[k:k + step] for k in range(0, len(items), step)]
                with _pool_context().Pool(min(jobs, len(chunks))) as pool:
                    parsed = [e for part in pool.map(_parse_chunk, chunks) for e in part]
            else:
                parsed = _parse_chunk(items)
        new_rows = [r for _, rows in parsed for r in rows]
        new_cols = _object_columns(new_rows)
        n_old = int(old.start[-1]) if old is not None else 0
        # per listed file: where its rows start in [old rows | new rows], and how many
        src = np.zeros(len(listing), np.int64)
        length = np.zeros(len(listing), np.int64)
        seeds_list = [None] * len(listing)
        if old is not None:
            h = hit >= 0
            src[h] = old.start[hit[h]]
            length[h] = old.start[hit[h] + 1] - old.start[hit[h]]
            for i in np.flatnonzero(h).tolist():
                seeds_list[i] = old.seeds[hit[i]]
        at = n_old
        for i, (s, rows) in zip(todo, parsed):
            src[i], length[i], seeds_list[i] = at, len(rows), s
            at += len(rows)
        start = np.r_[0, np.cumsum(length)].astype(np.int64)
        idx = np.repeat(src - start[:-1], length) + np.arange(int(start[-1]), dtype=np.int64)
        pool_cols = [np.concatenate([o, n]) for o, n in zip(old.cols, new_cols)] if old is not None else new_cols
        cols = [c[idx] for c in pool_cols]
        if use_cache:
            _save(cpath, [x[0] for x in listing], np.array([x[1] for x in listing], np.int64),
                  np.array([x[2] for x in listing], np.int64), start, seeds_list, cols)
    seeds: dict[str, int] = {}
    for s in seeds_list:
        if s is not None:
            seeds[s[0]] = int(s[1])
    return cols, seeds, [x[0] for x in listing], np.asarray(start, np.int64)


def read_rows(results_dir: Path, *, jobs: int | None = None,
              use_cache: bool = True) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """(long-table rows of every record, failed included; budget name → seeds), as
    ``long_table(iter_records(results_dir), include_failed=True)`` and ``budget_seeds`` would give."""
    cols, seeds = read_columns(results_dir, jobs=jobs, use_cache=use_cache)
    return list(zip(*cols)), seeds


def read_frame(results_dir: Path, *, jobs: int | None = None, use_cache: bool = True,
               with_files: bool = False) -> Any:
    """(the long table (failed included) as ``rows_frame(read_rows(...)[0])`` gives it, built column by
    column (no per-row tuples); budget name → seeds).

    ``with_files``: (table, seeds, files), the table with one more column, ``record``: the index in
    ``files`` of the record file each row came from (under ``<results_dir>/records``). What a board
    recomputed from this cache needs to read its runs' per-example outcomes again (only its own files,
    only when it is recomputed: :func:`harness.leaderboard.report.board_outcomes`)."""
    cols, seeds, files, start = _read(results_dir, jobs=jobs, use_cache=use_cache)
    frame = columns_frame(cols)
    if not with_files:
        return frame, seeds
    frame["record"] = np.repeat(np.arange(len(files), dtype=np.int64), np.diff(start))
    return frame, seeds, files


def columns_frame(cols: list[np.ndarray]) -> Any:
    """``rows_frame`` of the rows these object columns hold: the same per-column inference
    (``DataFrame.from_records(..., coerce_float=True)`` converts each object column this way)."""
    import pandas as pd
    from pandas._libs import lib

    from harness.leaderboard.table import LONG_COLUMNS, rows_frame

    if not len(cols[0]):
        return rows_frame([])
    data = {name: lib.maybe_convert_objects(c, try_float=True) for name, c in zip(LONG_COLUMNS, cols)}
    return pd.DataFrame(data, columns=LONG_COLUMNS)
