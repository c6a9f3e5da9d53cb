"""The tuning database: the best config found per (kernel, device, backend version), on disk.

In:  results of codegen/tune.py. Out: `get()` gives a stored config (a dict) for a kernel key.

Invariants
- One sqlite file, `$LAZY_TUNE_DB` or `$LAZY_CACHE_DIR/tuning.sqlite` (default
  `~/.cache/lazy/tuning.sqlite`). Rows are keyed by the kernel's content hash (`Kernel.key()` /
  `ExternCall.key()`), the device name (CPU model and core count, or the GPU's name) and the
  backend version (compiler or Triton version, plus this module's schema version): a winner found
  on one machine or compiler is never applied to another.
- Concurrent writers are safe: WAL journal where the file system allows it, every write one
  `BEGIN IMMEDIATE` transaction, a busy timeout instead of failing on a lock.
- A file that is not a sqlite database, or is one that this module did not write (no `meta`
  table naming it, or another schema version), is reported once on stderr, moved aside to
  `<name>.corrupt-<timestamp>` and replaced by a fresh database. Nothing here raises into the
  program: a database that cannot be used reads as empty, and a write that cannot be done is
  reported and dropped (the kernel simply runs untuned).
- Reading is cheap: when the file does not exist, `get` returns None without opening anything.
- Rows are data from whoever could write the file or the export, and their configs become
  generated source: `load_export` checks every field of every row (configs knob by knob, through
  codegen/tune.py `config_from` and codegen/knobs.py) and refuses the whole file on the first bad
  one, so an import writes all its rows or none; codegen/tune.py `tuned_config` checks each row
  it reads. Text from rows reaches the terminal only through `printable` (warnings, reports).
- A database this process cannot write (read-only media: a container image with a warm cache)
  is read as immutable: sqlite needs no -shm file beside it then, which it could not create.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

from codegen import knobs

SCHEMA = 1
APP = "lazy-triton tuning database"
FIELDS = ("kernel", "device", "version", "backend", "name", "config", "default_config", "default_s", "tuned_s",
          "tried", "rejected", "tuning_s", "created")

_DDL = ("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", """
CREATE TABLE IF NOT EXISTS tuned (
    kernel TEXT NOT NULL,          -- Kernel.key() / ExternCall.key()
    device TEXT NOT NULL,          -- e.g. 'AMD EPYC (2 cpus)', 'NVIDIA H100 80GB HBM3'
    version TEXT NOT NULL,         -- backend version: compiler / triton version, schema
    backend TEXT NOT NULL,         -- 'c' | 'triton' | 'gemm'
    name TEXT NOT NULL,            -- the kernel's name when it was tuned (for reports)
    config TEXT NOT NULL,          -- JSON: the winning config's fields
    default_config TEXT NOT NULL,  -- JSON: the heuristic config it was compared with
    default_s REAL,                -- seconds per launch, default config
    tuned_s REAL,                  -- seconds per launch, winner
    tried INTEGER NOT NULL,        -- configs benchmarked
    rejected INTEGER NOT NULL,     -- configs that failed to build or gave a different result
    tuning_s REAL NOT NULL,        -- wall time spent tuning this kernel
    created REAL NOT NULL,         -- unix time
    PRIMARY KEY (kernel, device, version)
)""")

# what each field of an imported row must be (a bool is never a number)
_TEXT, _OBJECT, _INT = (str, "a string"), (dict, "a JSON object"), (int, "an integer")
_NUMBER, _TIME = ((int, float), "a number"), ((int, float, type(None)), "a number or null")
_ROW_TYPES = {"kernel": _TEXT, "device": _TEXT, "version": _TEXT, "backend": _TEXT, "name": _TEXT,
              "config": _OBJECT, "default_config": _OBJECT, "default_s": _TIME, "tuned_s": _TIME, "tried": _INT,
              "rejected": _INT, "tuning_s": _NUMBER, "created": _NUMBER}

_warned: set[str] = set()
_lock = threading.Lock()


def path() -> Path:
    explicit = os.environ.get("LAZY_TUNE_DB")
    if explicit:
        return Path(explicit)
    from codegen.compile_c import cache_root

    return cache_root() / "tuning.sqlite"


def printable(text) -> str:
    """`text` with every character that is not printable (control characters, terminal escape
    sequences' ESC, bidirectional overrides) replaced by its `repr` escape: what a file or the
    database holds may be shown on a terminal, never interpreted by it."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _warn(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        print(f"lazy: {printable(msg)}", file=sys.stderr)


class _Foreign(Exception):
    pass


def _writable(p: Path) -> bool:
    from codegen.compile_c import writable

    return writable(p.parent) and (not p.exists() or os.access(p, os.W_OK))


def _connect(p: Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        return sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)
    con = sqlite3.connect(str(p), timeout=30.0, isolation_level=None)  # transactions are explicit
    try:
        con.execute("PRAGMA busy_timeout = 30000")
        try:
            con.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError:  # some file systems cannot share WAL memory: keep the rollback journal
            pass
        return con
    except BaseException:
        con.close()
        raise


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _check(con: sqlite3.Connection) -> None:
    """Raise _Foreign unless this is our database (or an empty one, which gets our schema)."""
    tables = _tables(con)
    if not tables:
        # one transaction, re-checked under the write lock: a second process creating the same
        # file never sees tables without their meta rows
        con.execute("BEGIN IMMEDIATE")
        try:
            if not _tables(con):
                for stmt in _DDL:
                    con.execute(stmt)
                con.execute("INSERT INTO meta VALUES ('app', ?)", (APP,))
                con.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        tables = _tables(con)
    if "meta" not in tables or "tuned" not in tables:
        raise _Foreign(f"tables {sorted(tables)}")
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("app") != APP:
        raise _Foreign(f"meta app {meta.get('app')!r}")
    if meta.get("schema") != str(SCHEMA):
        raise _Foreign(f"schema {meta.get('schema')!r}, expected {SCHEMA}")


def _set_aside(p: Path, why: str) -> None:
    dest = p.with_name(f"{p.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(p, dest)
        for suffix in ("-wal", "-shm"):
            side = p.with_name(p.name + suffix)
            if side.exists():
                os.replace(side, dest.with_name(dest.name + suffix))
        _warn(f"tuning database {p} is unusable ({why}); moved it to {dest} and started a new one")
    except FileNotFoundError:  # another process moved it first
        pass
    except OSError as e:
        _warn(f"tuning database {p} is unusable ({why}) and cannot be moved aside ({e}); tuning results "
              "will not be stored")


def _open(create: bool, write: bool = True) -> sqlite3.Connection | None:
    """A checked connection, or None (no file and not `create`, or unusable). Without `write`, a
    database this process cannot write is opened read-only."""
    p = path()
    for attempt in range(2):
        if not create and not p.exists():
            return None
        con = None
        read_only = not write and not _writable(p)
        try:
            if create:
                p.parent.mkdir(parents=True, exist_ok=True)
            con = _connect(p, read_only)
            _check(con)
            return con
        except (_Foreign, sqlite3.DatabaseError) as e:
            if con is not None:
                con.close()
            transient = isinstance(e, sqlite3.OperationalError) and any(
                w in str(e) for w in ("locked", "busy", "unable to open", "readonly", "disk I/O"))
            if transient or attempt or read_only:  # (read-only: it cannot be moved aside)
                _warn(f"tuning database {p} cannot be used now ({e}); running without it")
                return None
            _set_aside(p, f"{type(e).__name__}: {e}" if not isinstance(e, _Foreign) else f"not ours: {e}")
        except OSError as e:
            if con is not None:
                con.close()
            _warn(f"tuning database {p} cannot be opened ({e}); running without it")
            return None
    return None


def _row(r: tuple) -> dict:
    d = dict(zip(FIELDS, r))
    d["config"] = json.loads(d["config"])
    d["default_config"] = json.loads(d["default_config"])
    return d


def get(kernel: str, device: str, version: str) -> dict | None:
    """The stored row for a kernel on this device and backend version, or None."""
    with _lock:
        con = _open(create=False, write=False)
        if con is None:
            return None
        try:
            r = con.execute(f"SELECT {', '.join(FIELDS)} FROM tuned WHERE kernel = ? AND device = ? AND version = ?",
                            (kernel, device, version)).fetchone()
            return _row(r) if r else None
        except (sqlite3.Error, ValueError) as e:
            _warn(f"tuning database {path()}: cannot read ({e}); running without it")
            return None
        finally:
            con.close()


def put(rows: list[dict]) -> bool:
    """Insert or replace rows (dicts with FIELDS; configs as dicts) in one transaction."""
    with _lock:
        con = _open(create=True)
        if con is None:
            return False
        try:
            con.execute("BEGIN IMMEDIATE")
            for row in rows:
                vals = dict(row)
                vals["config"] = json.dumps(vals["config"], sort_keys=True)
                vals["default_config"] = json.dumps(vals["default_config"], sort_keys=True)
                vals.setdefault("created", time.time())
                con.execute(f"INSERT OR REPLACE INTO tuned ({', '.join(FIELDS)}) VALUES "
                            f"({', '.join('?' * len(FIELDS))})", [vals[f] for f in FIELDS])
            con.execute("COMMIT")
            return True
        except (sqlite3.Error, KeyError, TypeError, ValueError) as e:
            if con.in_transaction:
                con.execute("ROLLBACK")
            _warn(f"tuning database {path()}: cannot write ({type(e).__name__}: {e}); result not stored")
            return False
        finally:
            con.close()


def rows(device: str | None = None) -> list[dict]:
    """Every stored row (of one device when given), oldest first."""
    with _lock:
        con = _open(create=False, write=False)
        if con is None:
            return []
        try:
            q = f"SELECT {', '.join(FIELDS)} FROM tuned"
            args: tuple = ()
            if device is not None:
                q += " WHERE device = ?"
                args = (device,)
            return [_row(r) for r in con.execute(q + " ORDER BY created", args).fetchall()]
        except (sqlite3.Error, ValueError) as e:
            _warn(f"tuning database {path()}: cannot read ({e})")
            return []
        finally:
            con.close()


def clear() -> int:
    """Delete every row; returns how many there were."""
    with _lock:
        con = _open(create=False)
        if con is None:
            return 0
        try:
            con.execute("BEGIN IMMEDIATE")
            n = con.execute("DELETE FROM tuned").rowcount
            con.execute("COMMIT")
            return n
        finally:
            con.close()


def export(dest: Path) -> int:
    """Write every row as JSON (`{"schema": ..., "rows": [...]}`); returns the row count."""
    data = rows()
    payload = {"app": APP, "schema": SCHEMA, "rows": data}
    from codegen.compile_c import atomic_write

    atomic_write(Path(dest), (json.dumps(payload, indent=1, sort_keys=True) + "\n").encode())
    return len(data)


def load_export(src: Path) -> list[dict]:
    """Rows of a JSON export, every field and every config knob checked. ValueError (one line)
    says what is wrong with the file: which row, which field or knob, its value, what was expected."""
    try:
        payload = json.loads(Path(src).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{src} is not JSON: {e}") from e
    if not isinstance(payload, dict) or payload.get("app") != APP or not isinstance(payload.get("rows"), list):
        raise ValueError(f"{src} is not a lazy tuning export (expected {{'app': {APP!r}, 'rows': [...]}})")
    if payload.get("schema") != SCHEMA:
        raise ValueError(f"{src} has schema {payload.get('schema')!r}; this version reads schema {SCHEMA}")
    from codegen import tune  # configs are checked by the classes tune.py builds them with

    out = []
    for i, r in enumerate(payload["rows"]):
        missing = [f for f in FIELDS if f not in r] if isinstance(r, dict) else list(FIELDS)
        if missing:
            raise ValueError(f"{src}: row {i} is malformed (missing {missing})")
        where = f"{src}: row {i} (kernel {knobs.shown(r['kernel'])})"
        for f in FIELDS:
            types, what = _ROW_TYPES[f]
            if not isinstance(r[f], types) or isinstance(r[f], bool):
                raise ValueError(f"{where}: {f}={knobs.shown(r[f])} is not {what}")  # noqa: TRY004 (a bad file)
        for f in ("config", "default_config"):
            try:
                tune.config_from(r["backend"], r[f])
            except ValueError as e:
                raise ValueError(f"{where}: {f}: {e}") from None
        out.append({f: r[f] for f in FIELDS})
    return out
