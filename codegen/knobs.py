"""Tuning knobs: what each field of a kernel config may hold, checked on the way in and on the way out.

In:  a config dataclass whose fields are declared with `knob(default, spec)` (`CConfig`,
     `TritonConfig`, `GemmCConfig`, `GemmConfig`), and values for it: a dict read from the tuning
     database or an export file, or an instance built in code.
Out: `from_dict(cls, d)` builds a checked instance; `check(cfg)` checks one; `value(cfg, name)`
     gives one knob's checked value and `src(cfg, name)` its text for generated source;
     `describe(cfg)` and `py_dict(cfg)` the whole config as Python literal text. Each raises
     `KnobError` (a ValueError) naming the config class, the knob, its bad value and what was expected.

Invariants
- Every field of a config class has a spec, written once beside the field: an integer range
  (optionally powers of two only, or a fixed set of values), a bool, or a string from a fixed
  list; None only where the spec allows it (None: the heuristic decides).
- bool is not an int (True threads would be 1 thread) and a float is never an int (2.5 tiles; nor
  8.0: JSON keeps 8 and 8.0 apart, so a float was written by someone else).
- Configs come from files and a database that anyone who can write them controls, and their knob
  values are pasted into C and Python source that is compiled and run. Only an int or a string
  of a spec's fixed list ever leaves `src`, and renderers format config values through it: no
  text from a file or the database can reach generated source.
- A bad value is shown with `repr`, cut to `SHOWN` characters: escapes instead of control
  characters, one line whatever the value held.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

REQUIRED = MISSING  # `knob(REQUIRED, spec)`: a field without a default
SHOWN = 60  # characters of a bad value's repr in a message


class KnobError(ValueError):
    """A config value that is not one its knob's spec allows."""


@dataclass(frozen=True)
class Spec:
    """What one knob may hold. kind "int": `lo <= v <= hi`, a power of two when `pow2`, one of
    `values` when given; "bool"; "enum": one of the strings in `values`. `none`: None is allowed."""

    kind: str
    lo: int = 0
    hi: int = 0
    values: tuple = ()
    pow2: bool = False
    none: bool = False

    def expected(self) -> str:
        if self.kind == "bool":
            what = "true or false"
        elif self.values:
            what = "one of " + ", ".join(repr(v) if isinstance(v, str) else str(v) for v in self.values)
        elif self.pow2:
            what = f"a power of two from {self.lo} to {self.hi}"
        else:
            what = f"an integer from {self.lo} to {self.hi}"
        return what + (", or None" if self.none else "")

    def allows(self, v) -> bool:
        if v is None:
            return self.none
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "enum":
            return isinstance(v, str) and v in self.values
        if not isinstance(v, int) or isinstance(v, bool):
            return False
        if self.values:
            return v in self.values
        return self.lo <= v <= self.hi and not (self.pow2 and v & (v - 1))


def integer(lo: int, hi: int, *, pow2: bool = False, none: bool = False) -> Spec:
    return Spec("int", lo, hi, pow2=pow2, none=none)


def one_of(*values, none: bool = False) -> Spec:
    """Ints from a fixed set, or strings from a fixed list (not both)."""
    if all(isinstance(v, str) for v in values):
        return Spec("enum", values=values, none=none)
    assert all(isinstance(v, int) and not isinstance(v, bool) for v in values), values
    return Spec("int", min(values), max(values), values=values, none=none)


def flag(*, none: bool = False) -> Spec:
    return Spec("bool", none=none)


def knob(default, spec: Spec):
    """A config dataclass field with its spec (`REQUIRED` as the default: no default)."""
    if default is not REQUIRED and not spec.allows(default):
        raise TypeError(f"default {default!r} is not allowed by its own spec ({spec.expected()})")
    return field(default=default, metadata={"knob": spec})


def specs(cls) -> dict[str, Spec]:
    """Every knob of a config class, in field order."""
    out = {}
    for f in fields(cls):
        if "knob" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} has no spec: declare it with knobs.knob(default, spec)")
        out[f.name] = f.metadata["knob"]
    return out


def shown(v) -> str:
    text = repr(v)
    return text if len(text) <= SHOWN else text[:SHOWN - 3] + "..."


def _fail(cls, name: str, v, spec: Spec) -> KnobError:
    return KnobError(f"{cls.__name__}.{name}={shown(v)}: expected {spec.expected()}")


def value(cfg, name: str):
    """The value of knob `name` of `cfg`, checked against its spec."""
    spec = specs(type(cfg))[name]
    v = getattr(cfg, name)
    if not spec.allows(v):
        raise _fail(type(cfg), name, v, spec)
    return v


def src(cfg, name: str) -> str:
    """Knob `name` of `cfg` as text for generated source: decimal digits of an int, or the
    listed string of an enum (taken from the spec, not from the config). None and bools are
    decided in Python and never formatted: asking for them is a renderer bug."""
    spec = specs(type(cfg))[name]
    v = value(cfg, name)
    if v is None or spec.kind == "bool":
        raise KnobError(f"{type(cfg).__name__}.{name}={shown(v)}: only integers and enum values go into source")
    if spec.kind == "enum":
        return spec.values[spec.values.index(v)]
    return str(int(v))


def check(cfg) -> None:
    """Raise KnobError unless every knob of `cfg` holds a value its spec allows."""
    for name in specs(type(cfg)):
        value(cfg, name)


def from_dict(cls, d) -> object:
    """A checked `cls` from a mapping of knob names to values (JSON from a file or the database).
    Unknown knobs, missing required ones and values their spec does not allow are KnobErrors."""
    if not isinstance(d, dict):
        raise KnobError(f"{cls.__name__}: a config is a JSON object of knobs, got {shown(d)}")
    declared = specs(cls)
    for name in d:
        if name not in declared:
            raise KnobError(f"{cls.__name__}: unknown knob {shown(name)} (knobs: {', '.join(declared)})")
    for f in fields(cls):
        if f.name not in d and f.default is MISSING:
            raise KnobError(f"{cls.__name__}: missing knob {f.name} ({declared[f.name].expected()})")
    for name, v in d.items():
        if not declared[name].allows(v):
            raise _fail(cls, name, v, declared[name])
    return cls(**d)


def _py(cfg, name: str) -> str:
    v = value(cfg, name)
    if v is None or isinstance(v, bool):
        return repr(v)
    return repr(src(cfg, name)) if isinstance(v, str) else src(cfg, name)


def describe(cfg) -> str:
    """`repr(cfg)` built from checked values: what generated source may quote of a config."""
    return f"{type(cfg).__name__}(" + ", ".join(f"{n}={_py(cfg, n)}" for n in specs(type(cfg))) + ")"


def py_dict(cfg) -> str:
    """`repr(dataclasses.asdict(cfg))` built from checked values."""
    return "{" + ", ".join(f"{n!r}: {_py(cfg, n)}" for n in specs(type(cfg))) + "}"
