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
  the per-file keys and row offsets (an all-bool column, like ``subtask``, as a bool array). A
  regeneration that parses a few new or changed files merges their encoded rows with the cache's arrays
  and writes those back: the unchanged records are neither decoded into Python objects nor encoded again,
  and a column of one type goes to the long table as the very array stored. Those few files are
  written as a delta (``records.delta.npz``: their rows, and the whole cache's files they drop) beside
  the whole cache, which is rewritten only when the delta outgrows 1/8 of the rows (a delta names the
  whole cache it applies to by a token, so a stale one is ignored). No pickle: the file sits
  in a shared results tree, and unpickling a file someone else can write is code execution; this file
  can at worst hold wrong data, and it is rebuilt whole when it fails to load or is inconsistent.
  Written atomically (temp file + rename);
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
# per-example outcome totals columns; 7: the outcome_key column (a digest of each set's outcomes); 8: file
# names as one NUL-separated byte array and seeds as arrays (not JSON lists); columns merged, not re-encoded
# 11: an external record's budget column is <budget>@<publisher> (harness.leaderboard.external)
CACHE_VERSION = 11
CACHE_NAME = "records.npz"
POOL_MIN_FILES = 2000  # below this a pool's start-up costs more than it saves
N_COLUMNS = len(LONG_COLUMNS)
_KIND = {type(None): 0, str: 1, bool: 2, int: 3, float: 4}


def cache_path(results_dir: Path) -> Path:
    return Path(results_dir) / "leaderboards" / ".cache" / CACHE_NAME


def delta_path(cpath: Path) -> Path:
    """The delta beside the cache (`_save_state`): the files new or changed since it was written whole."""
    return cpath.with_name(cpath.stem + ".delta.npz")


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
    """The cache as stored: per file (name → index), size, mtime, row offsets, seeds; per column its
    description and its encoded arrays (``c{i}_*``, validated), decoded only as far as a caller asks."""

    def __init__(self, names: list[str], size: np.ndarray, mtime: np.ndarray, start: np.ndarray,
                 seeds: list[Any], descs: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> None:
        self.names, self.size, self.mtime, self.start, self.seeds = names, size, mtime, start, seeds
        self.descs, self.arrays = descs, arrays
        self._index: dict[str, int] | None = None
        self.token: str | None = None   # a whole cache: its identity, which a delta names as its base
        self.base: str | None = None    # a delta: the token of the whole cache it applies to
        self.removed: list[str] = []    # a delta: the base's files it drops (removed, or changed: in the delta)
        self.from_base = np.ones(len(names), bool)   # per file: its rows are the whole cache's, as stored there

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {n: k for k, n in enumerate(self.names)}
        return self._index

    @property
    def n_rows(self) -> int:
        return int(self.start[-1])

    def objects(self) -> list[np.ndarray]:
        """One object column per LONG_COLUMNS column, of exact Python values."""
        return [_decode(d, i, self.arrays, self.n_rows) for i, d in enumerate(self.descs)]

    def frame_columns(self) -> list[np.ndarray]:
        """The columns ``columns_frame(self.objects())`` holds, without the round trip through Python
        objects where a column is of one type (float/int/bool: what ``maybe_convert_objects`` makes of
        such an object column is that very array)."""
        from pandas._libs import lib

        out = []
        for i, d in enumerate(self.descs):
            kind = d["kind"]
            if kind in _PLAIN and self.n_rows:
                out.append(np.asarray(self.arrays[f"c{i}_{_PLAIN[kind]}"]))
            else:
                out.append(lib.maybe_convert_objects(_decode(d, i, self.arrays, self.n_rows), try_float=True))
        return out


_PLAIN = {"float": "f", "int": "i", "bool": "b"}   # one-type columns: array suffix
_SUFFIXES = {"str": ("code",), "float": ("f",), "int": ("i",), "bool": ("b",), "mixed": ("kind", "f", "i", "code")}


def _check(desc: Any, i: int, z: Any, n: int) -> dict[str, np.ndarray]:
    """The arrays of column ``i`` (as `_decode` reads them), after the checks `_decode` makes: the
    shapes, dtypes and codes of a column that decodes; ValueError otherwise."""
    if not isinstance(desc, dict) or desc.get("kind") not in _SUFFIXES:
        raise ValueError("bad kind")
    kind = desc["kind"]
    arrs = {f"c{i}_{s}": np.asarray(z[f"c{i}_{s}"]) for s in _SUFFIXES[kind]}
    if any(a.shape != (n,) for a in arrs.values()):
        raise ValueError("bad column shape")
    if kind in ("str", "mixed"):
        strings = desc.get("strings")
        if not isinstance(strings, list) or not all(isinstance(x, str) for x in strings):
            raise ValueError("bad strings")
    if kind == "str":
        codes = arrs[f"c{i}_code"]
        if codes.dtype.kind not in "iu" or (n and (codes.min() < -1 or codes.max() >= len(desc["strings"]))):
            raise ValueError("bad codes")
    elif kind == "float" and arrs[f"c{i}_f"].dtype != np.float64:
        raise ValueError("bad float column")
    elif kind == "int" and arrs[f"c{i}_i"].dtype != np.int64:
        raise ValueError("bad int column")
    elif kind == "bool" and arrs[f"c{i}_b"].dtype != np.bool_:
        raise ValueError("bad bool column")
    elif kind == "mixed":
        k, fl, it, code = (arrs[f"c{i}_{s}"] for s in _SUFFIXES["mixed"])
        if k.dtype.kind not in "iu" or fl.dtype != np.float64 or it.dtype != np.int64 or code.dtype.kind not in "iu":
            raise ValueError("bad mixed column")
        if n and (k.min() < 0 or k.max() > 4 or (code[k == 1] < 0).any()
                  or (code[k == 1] >= len(desc["strings"])).any()):
            raise ValueError("bad mixed column")
    return arrs


def _load(path: Path) -> _Cache | None:
    """The cache; None for a missing, unreadable, corrupt, outdated or inconsistent one (then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("header") != _header():
                return None
            budgets, descs = meta["budgets"], meta["columns"]
            text = bytes(z["names"]).decode("utf-8")
            names = text.split("\0") if text else []
            size, mtime, start = z["size"], z["mtime"], z["start"]
            seed_code, seed_n = z["seed_code"], z["seed_n"]
            nf = len(names)
            if (not isinstance(budgets, list) or not all(isinstance(x, str) for x in budgets)
                    or size.shape != (nf,) or mtime.shape != (nf,) or start.shape != (nf + 1,)
                    or seed_code.shape != (nf,) or seed_n.shape != (nf,)
                    or seed_code.dtype != np.int32 or seed_n.dtype != np.int64
                    or not isinstance(descs, list) or len(descs) != N_COLUMNS
                    or start[0] != 0 or (np.diff(start) < 0).any()
                    or (nf and (seed_code.min() < -1 or seed_code.max() >= len(budgets)))):
                return None
            n = int(start[-1])
            arrays: dict[str, np.ndarray] = {}
            for i, d in enumerate(descs):
                arrays.update(_check(d, i, z, n))
            table = np.array([*budgets, None], dtype=object)[seed_code]
            seeds = [None if b is None else [b, s] for b, s in zip(table.tolist(), seed_n.tolist())]
            out = _Cache(names, size.astype(np.int64), mtime.astype(np.int64), start.astype(np.int64), seeds,
                         descs, arrays)
            token, base = meta.get("token"), meta.get("base")
            if (not isinstance(token, str | None) or not isinstance(base, str | None)
                    or (token is None) == (base is None)):
                return None
            out.token, out.base = token, base
            if base is not None:
                text = bytes(z["removed"]).decode("utf-8")
                out.removed = text.split("\0") if text else []
            return out
    except Exception:  # noqa: BLE001 - any failure to read it back means: rebuild it
        return None


def _save(path: Path, names: list[str], size: np.ndarray, mtime: np.ndarray, start: np.ndarray,
          seeds: list[Any], descs: list[dict[str, Any]], columns: dict[str, np.ndarray], *,
          token: str | None = None, base: str | None = None, removed: Sequence[str] = ()) -> bool:
    """Atomic write of the encoded columns (``descs`` and their ``c{i}_*`` arrays: `_encode`'s, or the
    cache's own merged with a few new rows by `_merge`); an unwritable results tree goes uncached (False).
    A whole cache has a ``token``; a delta names its ``base``'s token and the base files it drops."""
    if any("\0" in x for x in [*names, *removed]):
        return False
    budgets: dict[str, int] = {}
    seed_code = np.full(len(names), -1, np.int32)
    seed_n = np.zeros(len(names), np.int64)
    for k, s in enumerate(seeds):
        if s is not None:
            seed_code[k] = budgets.setdefault(s[0], len(budgets))
            seed_n[k] = s[1]
    arrays = {"size": np.asarray(size, np.int64), "mtime": np.asarray(mtime, np.int64),
              "start": np.asarray(start, np.int64), "seed_code": seed_code, "seed_n": seed_n,
              "names": np.frombuffer("\0".join(names).encode("utf-8"), dtype=np.uint8), **columns}
    meta = {"header": _header(), "budgets": list(budgets), "columns": descs, "token": token, "base": base}
    arrays["meta"] = np.frombuffer(json.dumps(meta, separators=(",", ":")).encode("utf-8"), dtype=np.uint8)
    if base is not None:
        arrays["removed"] = np.frombuffer("\0".join(removed).encode("utf-8"), dtype=np.uint8)
    try:
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    except OSError:
        return False
    return True


DELTA_SHARE = 8          # a delta holding more than 1/8 of the rows (and more than DELTA_MIN_ROWS) is
DELTA_MIN_ROWS = 2000    # folded into a whole cache


def _order(entries: list[tuple[str, int, int, int]]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(names, first row of each, row count of each, and the sorted position of each) of entries
    (name, source row, row count, source file index) put in name order; `_read`'s ``idx`` follows."""
    entries.sort()
    names = [e[0] for e in entries]
    src = np.fromiter((e[1] for e in entries), np.int64, len(entries))
    length = np.fromiter((e[2] for e in entries), np.int64, len(entries))
    which = np.fromiter((e[3] for e in entries), np.int64, len(entries))
    return names, src, length, which


def _gather(src: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start of each file in the gathered rows, the row index gathering them from their sources)."""
    start = np.r_[0, np.cumsum(length)].astype(np.int64)
    return start, np.repeat(src - start[:-1], length) + np.arange(int(start[-1]), dtype=np.int64)


def _combine(base: _Cache, delta: _Cache) -> _Cache:
    """The cache a whole one and its delta make: the base's files less those the delta drops or holds,
    the delta's files, in name order (rows of [base rows | delta rows], merged by `_merge`)."""
    drop = set(delta.removed) | set(delta.names)
    entries = [(n, int(base.start[k]), int(base.start[k + 1] - base.start[k]), k)
               for k, n in enumerate(base.names) if n not in drop]
    n_base = len(base.names)
    entries += [(n, base.n_rows + int(delta.start[k]), int(delta.start[k + 1] - delta.start[k]), n_base + k)
                for k, n in enumerate(delta.names)]
    names, src, length, which = _order(entries)
    start, idx = _gather(src, length)
    descs, arrays = _merge(base, delta.descs, delta.arrays, delta.n_rows, idx)
    size, mtime = np.r_[base.size, delta.size][which], np.r_[base.mtime, delta.mtime][which]
    seeds = [*base.seeds, *delta.seeds]
    out = _Cache(names, size, mtime, start, [seeds[k] for k in which.tolist()], descs, arrays)
    out.from_base = which < n_base
    return out


def _load_state(cpath: Path) -> tuple[_Cache | None, _Cache | None]:
    """(the cache: the whole one with its delta applied; the whole one alone). A delta written for
    another whole cache (a token it does not name), or one that does not load, is ignored."""
    base = _load(cpath)
    if base is None or base.token is None:
        return None, None
    delta = _load(delta_path(cpath))
    if delta is None or delta.base != base.token:
        return base, base
    try:
        return _combine(base, delta), base
    except Exception:  # noqa: BLE001 - an inconsistent delta: use the whole cache (changed files get parsed)
        return base, base


def _save_state(cpath: Path, table: _Cache, base: _Cache | None) -> None:
    """Write ``table`` back: as a delta over ``base`` (the files whose rows are not ``base``'s as stored
    there, ``table.from_base``; and the base files it drops) while that delta stays small, so that a
    regeneration after a few new records writes those records' rows and not 100k records' again; else
    whole, with a new token (an old delta then names a token that no longer exists: ignored, and
    removed)."""
    import secrets

    if base is not None:
        from_base = table.from_base
        own = np.flatnonzero(~from_base)
        length = (table.start[1:] - table.start[:-1])[own]
        n_rows = int(length.sum())
        if n_rows <= max(DELTA_MIN_ROWS, table.n_rows // DELTA_SHARE):
            kept = {n for n, f in zip(table.names, from_base.tolist()) if f}
            start, idx = _gather(table.start[:-1][own], length)
            descs, arrays = _merge(table, table.descs, {}, 0, idx)
            names = [table.names[k] for k in own.tolist()]
            _save(delta_path(cpath), names, table.size[own], table.mtime[own], start,
                  [table.seeds[k] for k in own.tolist()], descs, arrays, base=base.token,
                  removed=[n for n in base.names if n not in kept])
            return
    if _save(cpath, table.names, table.size, table.mtime, table.start, table.seeds, table.descs, table.arrays,
             token=secrets.token_hex(16)):
        try:
            delta_path(cpath).unlink(missing_ok=True)
        except OSError:
            pass


def _encode_all(cols: list[np.ndarray]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]] | None:
    """`_encode` of every column; None when a value cannot be cached."""
    arrays: dict[str, np.ndarray] = {}
    try:
        return [_encode(c, i, arrays) for i, c in enumerate(cols)], arrays
    except (TypeError, ValueError, OverflowError):
        return None


def _as_mixed(desc: dict[str, Any], i: int, arrays: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """Any encoded column as the arrays of a mixed one (kind, f, i, code) and its strings."""
    kind = desc["kind"]
    if kind == "mixed":
        return {"kind": arrays[f"c{i}_kind"].astype(np.int8), "f": arrays[f"c{i}_f"], "i": arrays[f"c{i}_i"],
                "code": arrays[f"c{i}_code"].astype(np.int32), "strings": desc["strings"]}
    out = {"kind": np.zeros(n, np.int8), "f": np.zeros(n, np.float64), "i": np.zeros(n, np.int64),
           "code": np.full(n, -1, np.int32), "strings": desc.get("strings", [])}
    if kind == "str":
        code = arrays[f"c{i}_code"].astype(np.int32)
        out["code"] = code
        out["kind"][code >= 0] = 1
    elif kind == "float":
        out["kind"][:] = 4
        out["f"] = arrays[f"c{i}_f"]
    elif kind == "int":
        out["kind"][:] = 3
        out["i"] = arrays[f"c{i}_i"]
    else:   # bool
        out["kind"][:] = 2
        out["i"] = arrays[f"c{i}_b"].astype(np.int64)
    return out


def _join_strings(a: list[str], b: list[str], code_b: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The string table a + the strings of b it lacks, and b's codes into it (-1 stays -1)."""
    at = {s: k for k, s in enumerate(a)}
    table = list(a)
    remap = np.empty(len(b) + 1, np.int32)
    remap[-1] = -1
    for k, s in enumerate(b):
        if s not in at:
            at[s] = len(table)
            table.append(s)
        remap[k] = at[s]
    return table, remap[code_b]


def _prune(strings: list[str], codes: list[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """The strings some code still uses (in their order), and the codes into that table."""
    used = np.zeros(len(strings) + 1, bool)
    for c in codes:
        used[c] = True
    used = used[:-1]
    if used.all():
        return strings, codes
    remap = np.full(len(strings) + 1, -1, np.int32)
    remap[np.flatnonzero(used)] = np.arange(int(used.sum()), dtype=np.int32)
    return [s for s, u in zip(strings, used.tolist()) if u], [remap[c] for c in codes]


def _merge(old: _Cache, new_descs: list[dict[str, Any]], new_arrays: dict[str, np.ndarray], n_new: int,
           idx: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The encoded columns of rows ``[old rows | new rows][idx]``, merged array by array: a regeneration
    that parsed a few files neither decodes nor re-encodes the cache's 100k records. Same values as
    `_encode` of the decoded rows (the encoding may differ: a column whose two parts are of different
    kinds is stored as mixed, as `_encode` would store the concatenation)."""
    n_old = old.n_rows
    descs: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for i, (od, nd) in enumerate(zip(old.descs, new_descs)):
        if n_new == 0 or n_old == 0:
            d, src = (od, old.arrays) if n_new == 0 else (nd, new_arrays)
            parts = {s: src[f"c{i}_{s}"][idx] for s in _SUFFIXES[d["kind"]]}
            strings = d.get("strings")
        elif od["kind"] == nd["kind"] and od["kind"] != "mixed":
            d = od
            parts = {s: np.concatenate([old.arrays[f"c{i}_{s}"], new_arrays[f"c{i}_{s}"]])[idx]
                     for s in _SUFFIXES[d["kind"]]}
            strings = None
            if d["kind"] == "str":
                strings, code = _join_strings(od["strings"], nd["strings"], new_arrays[f"c{i}_code"])
                parts["code"] = np.concatenate([old.arrays[f"c{i}_code"].astype(np.int32), code])[idx]
        else:
            a, b = _as_mixed(od, i, old.arrays, n_old), _as_mixed(nd, i, new_arrays, n_new)
            strings, code_b = _join_strings(a["strings"], b["strings"], b["code"])
            d = {"kind": "mixed"}
            parts = {s: np.concatenate([a[s], b[s]])[idx] for s in ("kind", "f", "i")}
            parts["code"] = np.concatenate([a["code"], code_b])[idx]
        if strings is not None:
            strings, (parts["code"],) = _prune(strings, [parts["code"]])
            d = {**d, "strings": strings}
        descs.append(d)
        arrays.update({f"c{i}_{s}": v for s, v in parts.items()})
    return descs, arrays


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
    table, seeds, _files, _start = _read(results_dir, jobs=jobs, use_cache=use_cache)
    return table.objects(), seeds


class _Plain:
    """Rows held as object columns (values the cache cannot encode: they go uncached)."""

    def __init__(self, cols: list[np.ndarray]) -> None:
        self.cols = cols

    def objects(self) -> list[np.ndarray]:
        return self.cols

    def frame_columns(self) -> list[np.ndarray]:
        from pandas._libs import lib

        return [lib.maybe_convert_objects(c, try_float=True) for c in self.cols]


def _listing(records_dir: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of every record file, sorted by name: one stat per file, every time (a
    record rewritten in place changes neither the directory nor the names; only its stat shows it)."""
    listing: list[tuple[str, int, int]] = []
    with os.scandir(records_dir) as it:
        for d in it:
            if d.name.endswith(".json"):
                st = d.stat()
                listing.append((d.name, st.st_size, st.st_mtime_ns))
    listing.sort()
    return listing


def _read(results_dir: Path, *, jobs: int | None,
          use_cache: bool) -> tuple[_Cache | _Plain, dict[str, int], list[str], np.ndarray]:
    """(the rows, as a table with ``objects()`` and ``frame_columns()``; budget name → seeds; the record
    file names in row order; each file's first row (``start``, one more entry than files): row i comes
    from ``files[k]`` for ``start[k] <= i < start[k + 1]``).

    Only new and changed files are parsed; their rows are encoded and merged with the cache's encoded
    columns (`_merge`), and the cache is written back from those arrays: nothing of the unchanged
    records is decoded or encoded again."""
    records_dir = Path(results_dir) / "records"
    listing = _listing(records_dir)
    names = [x[0] for x in listing]
    cpath = cache_path(results_dir)
    old, base = _load_state(cpath) if use_cache else (None, None)
    hit = np.full(len(listing), -1, np.int64)  # index into the old cache per listed file
    if old is not None:
        if old.names == names:   # the usual case: same files in the same order, compare stats as arrays
            same = ((old.size == np.fromiter((x[1] for x in listing), np.int64, len(listing)))
                    & (old.mtime == np.fromiter((x[2] for x in listing), np.int64, len(listing))))
            hit[same] = np.flatnonzero(same)
        else:
            index = old.index
            for i, (name, size, mt) in enumerate(listing):
                k = index.get(name)
                if k is not None and old.size[k] == size and old.mtime[k] == mt:
                    hit[i] = k
    todo = np.flatnonzero(hit < 0).tolist()
    table: _Cache | _Plain
    if old is not None and not todo and old.names == names:
        table, seeds_list, start = old, old.seeds, old.start
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
        n_old = old.n_rows if old is not None else 0
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
        enc = _encode_all(new_cols)
        if enc is None:   # a value the cache cannot hold: these rows go uncached
            pool_cols = ([np.concatenate([o, n]) for o, n in zip(old.objects(), new_cols)] if old is not None
                         else new_cols)
            table = _Plain([c[idx] for c in pool_cols])
        else:
            empty = _Cache([], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64), [],
                           enc[0], {})
            descs, arrays = _merge(old if old is not None else empty, enc[0], enc[1], len(new_rows), idx)
            size = np.fromiter((x[1] for x in listing), np.int64, len(listing))
            mtime = np.fromiter((x[2] for x in listing), np.int64, len(listing))
            table = _Cache(names, size, mtime, start, seeds_list, descs, arrays)
            # a file's rows are still the whole cache's when they came from it unparsed
            table.from_base = np.zeros(len(names), bool)
            if old is not None:
                h = hit >= 0
                table.from_base[h] = old.from_base[hit[h]]
            if use_cache:
                _save_state(cpath, table, base)
    seeds: dict[str, int] = {}
    for s in seeds_list:
        if s is not None:
            seeds[s[0]] = int(s[1])
    return table, seeds, names, np.asarray(start, np.int64)


class RecordFiles(list):  # type: ignore[type-arg]
    """The record file names of `read_frame` (``with_files``), with the (size, mtime_ns) each had when
    listed (``stamp``): what keys the per-board outcomes cache, without a second stat per file."""

    def __init__(self, names: list[str], size: np.ndarray, mtime: np.ndarray) -> None:
        super().__init__(names)
        self.size, self.mtime = size, mtime

    def stamp(self, i: int) -> list[int]:
        return [int(self.size[i]), int(self.mtime[i])]


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
    table, seeds, files, start = _read(results_dir, jobs=jobs, use_cache=use_cache)
    frame = _frame(table.frame_columns())
    if not with_files:
        return frame, seeds
    frame["record"] = np.repeat(np.arange(len(files), dtype=np.int64), np.diff(start))
    return frame, seeds, RecordFiles(files, table.size, table.mtime) if isinstance(table, _Cache) else files


def _frame(cols: list[np.ndarray]) -> Any:
    """The long table of these columns (`frame_columns`: what `columns_frame` converts them to)."""
    import pandas as pd

    from harness.leaderboard.table import LONG_COLUMNS, rows_frame

    if not len(cols[0]):
        return rows_frame([])
    return pd.DataFrame(dict(zip(LONG_COLUMNS, cols)), columns=LONG_COLUMNS)


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
