"""Tuning sessions: `lazy.tune(fn, *args)`, `LAZY_TUNE=1`, and the `lazy tune` command.

In:  a program (a function, a script, or any run with LAZY_TUNE=1). Out: every distinct kernel
     it launches tuned on its real buffers just before its first launch (codegen/tune.py), the
     winners stored in the tuning database (codegen/tunedb.py) and used from then on, in this
     process and in every later one on the same device; a `TuneReport` of what was found.

A session is `runtime.tuner`: the runtime calls it with each launch before running it. Kernels
already in the database are not tuned again (unless `force`), so a second `lazy tune` of the
same script costs nothing. Tuning never breaks a program: a kernel whose tuning fails is
reported and runs with its default config. Progress goes to stderr: a live bar on a terminal,
one line per kernel otherwise.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from codegen import tune as _tune
from codegen import tunedb
from codegen.tunedb import printable
from lazy import runtime

DEFAULT_BUDGET_S = 10.0
DEFAULT_MAX_CONFIGS = 40


# -- report ----------------------------------------------------------------------------------------
def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.3f}" if s >= 1e-4 else f"{s * 1e3:.2g}"


def _number(v) -> float | None:
    """A number from a row (a database or an imported file may hold anything), else None."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _changes(default: dict, config: dict) -> str:
    if not isinstance(default, dict) or not isinstance(config, dict):
        return printable(repr(config))
    diff = [f"{k}={v}" for k, v in config.items() if default.get(k) != v]
    return printable(" ".join(diff)) if diff else "(default)"


def format_rows(rows: list[dict]) -> str:
    """Rows with name, kernel, backend, default_s, tuned_s, tried, tuning_s, config, default_config.
    Text from the rows is shown with control characters escaped (`tunedb.printable`): a name in an
    imported file must not reach the terminal as an escape sequence."""
    head = (f"{'kernel':<26} {'key':<12} {'backend':<7} {'default ms':>11} {'tuned ms':>10} {'speedup':>8} "
            f"{'configs':>7} {'tune s':>7}  config")
    out = [head, "-" * len(head)]
    for r in rows:
        default_s, tuned_s, tuning_s = (_number(r.get(f)) for f in ("default_s", "tuned_s", "tuning_s"))
        tried = r.get("tried") if isinstance(_number(r.get("tried")), int) else "-"
        sp = default_s / tuned_s if default_s and tuned_s else 1.0
        name, key, backend = (printable(r.get(f)) for f in ("name", "kernel", "backend"))
        out.append(f"{name[:26]:<26} {key[:12]:<12} {backend:<7} {_ms(default_s):>11} "
                   f"{_ms(tuned_s):>10} {sp:>7.2f}x {tried:>7} {tuning_s or 0.0:>7.1f}  "
                   f"{_changes(r.get('default_config'), r.get('config'))}")
    return "\n".join(out)


@dataclass
class TuneReport:
    """What a tuning session did: one `codegen.tune.TuneResult` per distinct kernel."""

    kernels: list = field(default_factory=list)  # TuneResult, in launch order
    failed: list[tuple[str, str]] = field(default_factory=list)  # (kernel name, why tuning failed)
    seconds: float = 0.0
    output: object = None  # what the tuned function returned (lazy.tune)

    @property
    def tuned(self) -> list:
        return [r for r in self.kernels if r.status == "tuned"]

    def rows(self) -> list[dict]:
        out = []
        for r in self.kernels:
            row = r.row()
            if r.status == "stored":
                row["name"] = f"{r.name} (stored)"
            out.append(row)
        return out

    def __str__(self) -> str:
        head = (f"{len(self.kernels)} kernel(s), {len(self.tuned)} tuned now, {len(self.failed)} failed, "
                f"{self.seconds:.1f} s")
        lines = [head, format_rows(self.rows())]
        lines += [printable(f"{name}: tuning failed: {why}") for name, why in self.failed]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"TuneReport({len(self.kernels)} kernels, {len(self.tuned)} tuned, {self.seconds:.1f} s)"


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """Tuning progress on stderr: a live bar per kernel on a terminal, a line per kernel always."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.live = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.count = 0
        self.name = ""

    def start(self, name: str, budget_s: float, max_configs: int) -> None:
        self.count += 1
        self.name, self.budget_s, self.max_configs = name, budget_s, max_configs

    def update(self, evaluated: int, elapsed: float, speedup: float) -> None:
        if not self.live:
            return
        frac = min(1.0, max(evaluated / max(self.max_configs, 1), elapsed / max(self.budget_s, 1e-9)))
        bar = "#" * int(frac * 20) + "-" * (20 - int(frac * 20))
        self.stream.write(f"\r\033[Ktune {self.count}: {self.name[:28]:<28} [{bar}] {evaluated:>3} configs "
                          f"{elapsed:5.1f}/{self.budget_s:.0f} s  best {speedup:.2f}x")
        self.stream.flush()

    def finish(self, line: str) -> None:
        if not self.enabled:
            return
        self.stream.write(("\r\033[K" if self.live else "") + f"tune {self.count}: {line}\n")
        self.stream.flush()


# -- the session -----------------------------------------------------------------------------------
class Session:
    """`runtime.tuner` while tuning: tunes each kernel once, then launches it with the winner."""

    def __init__(self, budget_s: float = DEFAULT_BUDGET_S, max_configs: int = DEFAULT_MAX_CONFIGS,
                 force: bool = False, bench=None, progress: bool | Progress = False, min_gain: float = 0.03):
        self.budget_s, self.max_configs, self.force, self.bench = budget_s, max_configs, force, bench
        self.min_gain = min_gain
        self.progress = progress if isinstance(progress, Progress) else Progress(bool(progress))
        self.report = TuneReport()
        self.done: dict[tuple[str, str], object] = {}  # (kernel key, kind) -> config in use
        self.kinds: dict[int, tuple] = {}  # id(kernel) -> (kernel, kind, key): no hashing per launch
        self.t0 = time.perf_counter()

    @staticmethod
    def _backend(ln) -> str:
        # a GEMM is an "extern" launch on both backends; only the Triton one has a launcher of ours
        if ln.backend == "extern":
            return "triton" if ln.fn is not None else "extern"
        return ln.backend

    def __call__(self, ln, slots, scalars=()):
        backend = self._backend(ln)
        k = ln.kernel
        known = self.kinds.get(id(k))
        if known is None:  # the kernel is kept in the entry, so its id is not reused
            kind = _tune.kind_of(k, backend)
            known = self.kinds[id(k)] = (k, kind, (k.key(), kind))
        _, kind, key = known
        if kind is None:
            return ln
        if key not in self.done:
            self.done[key] = self._settle(k, kind, backend, [slots[s] for s in ln.slots], ln.config,
                                          [scalars[i] for i in ln.scalars])
        cfg = self.done[key]
        if cfg is not None and ln.config != cfg:
            (rebuilt,) = runtime._compile(k, backend)  # with the winner (codegen.tune remembers it)
            return rebuilt
        return ln

    def _settle(self, k, kind: str, backend: str, tensors: list, current, scalars: list = ()):
        """Tune `k` (or take its stored winner); the config it should run with."""
        stored = None if self.force else _tune.tuned_config(k, backend)
        if stored is not None:
            row = tunedb.get(k.key(), _tune.device_name(kind), _tune.backend_version(kind)) or {}
            try:  # tuned_config checked this row; another process may have replaced it since
                default = _tune.config_from(kind, row.get("default_config") or asdict(stored))
            except ValueError:
                default = stored
            self.report.kernels.append(_tune.TuneResult(
                k.name, k.key(), kind, _tune.device_name(kind), default, stored,
                _number(row.get("default_s")) or 0.0, _number(row.get("tuned_s")) or 0.0, 0, status="stored"))
            self.progress.start(k.name, self.budget_s, self.max_configs)
            self.progress.finish(f"{k.name} ({kind}): stored winner, not re-tuned")
            return stored
        self.progress.start(k.name, self.budget_s, self.max_configs)
        try:
            res = _tune.tune_kernel(k, backend, tensors, budget_s=self.budget_s, max_configs=self.max_configs,
                                    min_gain=self.min_gain, bench=self.bench, progress=self.progress.update,
                                    scalars=scalars)
        except Exception as e:  # noqa: BLE001 (tuning must never break the program: run untuned)
            why = f"{type(e).__name__}: {e}"
            self.report.failed.append((k.name, why))
            self.progress.finish(f"{k.name} ({kind}): tuning failed, running the default: {why}")
            return current
        self.report.kernels.append(res)
        rejected = f", {len(res.rejected)} rejected" if res.rejected else ""
        self.progress.finish(
            f"{k.name} ({kind}): {_ms(res.default_s)} ms -> {_ms(res.best_s)} ms ({res.speedup:.2f}x), "
            f"{res.tried} configs{rejected}, {res.seconds:.1f} s ({res.stop}); "
            f"{_changes(asdict(res.default), asdict(res.best))}")
        return res.best

    def finish(self) -> TuneReport:
        self.report.seconds = time.perf_counter() - self.t0
        return self.report


@contextlib.contextmanager
def tuning(**kwargs):
    """Tune every new kernel launched in the block: `with lazy.tuning.tuning() as s: ...; s.report`.
    Keyword arguments are `Session`'s (budget_s, max_configs, force, bench, progress, min_gain)."""
    session = Session(**kwargs)
    prev = runtime.tuner
    runtime.tuner = session
    try:
        yield session
    finally:
        runtime.tuner = prev
        session.finish()


def _realize_all(out) -> None:
    from lazy.tensor import Tensor, realize

    found = []

    def walk(x):
        if isinstance(x, Tensor):
            found.append(x)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(out)
    if found:
        realize(*found)


def tune(fn, *args, budget_s: float = DEFAULT_BUDGET_S, max_configs: int = DEFAULT_MAX_CONFIGS, force: bool = False,
         progress: bool = False, bench=None, **kwargs) -> TuneReport:
    """Run `fn(*args, **kwargs)` with tuning on and return a `TuneReport` (`.output` holds what fn
    returned, lazy tensors in it realized). Winners are stored in the tuning database, so later
    runs of any program making the same kernels on this device use them without tuning.

    `budget_s` and `max_configs` bound the search per kernel; `force` re-tunes kernels the database
    already has; `bench(kernel, config) -> seconds` replaces timing (tests, cost models)."""
    with tuning(budget_s=budget_s, max_configs=max_configs, force=force, bench=bench, progress=progress) as s:
        out = fn(*args, **kwargs)
        _realize_all(out)
    s.report.output = out
    return s.report


def _env_session() -> None:
    """LAZY_TUNE=1: tune each kernel on first sight in a normal run (budget from LAZY_TUNE_BUDGET_S,
    LAZY_TUNE_MAX_CONFIGS), one line per kernel on stderr."""
    if os.environ.get("LAZY_TUNE", "0") not in ("1", "true", "yes") or runtime.tuner is not None:
        return
    try:
        budget = float(os.environ.get("LAZY_TUNE_BUDGET_S") or DEFAULT_BUDGET_S)
        configs = int(os.environ.get("LAZY_TUNE_MAX_CONFIGS") or DEFAULT_MAX_CONFIGS)
    except ValueError as e:
        raise ValueError(f"LAZY_TUNE_BUDGET_S / LAZY_TUNE_MAX_CONFIGS must be numbers: {e}") from e
    runtime.tuner = Session(budget_s=budget, max_configs=configs, progress=True)


_env_session()


# -- `lazy tune` -----------------------------------------------------------------------------------
def run_script(script: str, args: list[str], session_kwargs: dict) -> tuple[int, TuneReport]:
    """Run a script as __main__ with tuning on: (exit code: 0 ok, 1 the script failed, report)."""
    saved = sys.argv
    sys.argv = [script, *args]
    code = 0
    try:
        with tuning(**session_kwargs) as s:
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                if e.code not in (None, 0):
                    print(f"lazy tune: {script} exited with {e.code}", file=sys.stderr)
                    code = 1
            except Exception:  # noqa: BLE001 (the user's script failed: report, keep what was tuned)
                traceback.print_exc()
                print(f"lazy tune: {script} failed; kernels tuned before the failure are stored", file=sys.stderr)
                code = 1
    finally:
        sys.argv = saved
    return code, s.report


def main(args) -> int:
    """`lazy tune` (arguments parsed in lazy/cli.py). Exit codes: 0 ok, 1 the script failed, 2 bad usage."""
    actions = [a for a in ("report", "clear", "export", "import_") if getattr(args, a)]
    if len(actions) + bool(args.script) != 1:
        print("lazy tune: give a script to run, or exactly one of --report, --clear, --export FILE, --import FILE",
              file=sys.stderr)
        return 2
    db = tunedb.path()
    if args.report:
        here = {_tune.device_name("c"), _tune.device_name("triton")}
        rows = [r for r in tunedb.rows() if args.all_devices or r["device"] in here]
        if not rows:
            print(f"no tuned kernels in {db}" + ("" if args.all_devices else " for this device"))
            return 0
        print(f"{len(rows)} tuned kernel(s) in {db}")
        print(format_rows(rows))
        return 0
    if args.clear:
        n = tunedb.clear()
        print(f"cleared {n} tuned kernel(s) from {db}")
        return 0
    if args.export:
        try:
            n = tunedb.export(Path(args.export))
        except OSError as e:
            print(f"lazy tune: cannot write {args.export}: {e}", file=sys.stderr)
            return 2
        print(f"exported {n} tuned kernel(s) from {db} to {args.export}")
        return 0
    if args.import_:
        try:
            rows = tunedb.load_export(Path(args.import_))
        except (OSError, ValueError) as e:
            print(printable(f"lazy tune: cannot import {args.import_}: {e}"), file=sys.stderr)
            return 2
        if not tunedb.put(rows):
            return 1
        print(f"imported {len(rows)} tuned kernel(s) into {db}")
        return 0
    if not Path(args.script).is_file():
        print(f"lazy tune: no such script: {args.script}", file=sys.stderr)
        return 2
    if args.budget_s <= 0 or args.max_configs < 1:
        print("lazy tune: --budget-s must be > 0 and --max-configs >= 1", file=sys.stderr)
        return 2
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > cpus / 2:
        print(f"lazy tune: load average {load:.1f} on {cpus} CPUs: other processes are busy, so timings are noisy "
              "and may favour fewer threads than an idle machine would", file=sys.stderr)
    code, report = run_script(args.script, list(args.args), {
        "budget_s": args.budget_s, "max_configs": args.max_configs, "force": args.force, "progress": True})
    if report.kernels or report.failed:
        print(report)
    else:
        print(f"lazy tune: {args.script} launched no tunable kernels")
    print(f"tuning database: {db}")
    return code
