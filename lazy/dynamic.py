"""Dynamic shapes: one program for every size of a dimension that changes between calls.

In:  the structure key of a program the runtime does not have, and its graph.
Out: a `Template` of the program's sizes (which are symbols, how the others follow from them) and
     the program built once for all its sizes: Kernel IR whose loops, strides and offsets are
     polynomials in size symbols `d0, d1, ...` that the kernels take as arguments.

Automatic dynamic, as Inductor's: the first size seen is specialized; when the same program
(the same structure key with its sizes erased: a *family*) comes with other sizes, the sizes of
the input buffers that changed become symbols and every other size of the key (node shapes,
reshape/expand/pad/shrink arguments, buffer strides and offsets) must follow from them by a simple
rule (`fit`: a constant, or c * m + d for a monomial m of the symbols: `B*T*C`, `T - 1`, `(T-1)*C`).
A size that fits no rule leaves the family specialized. Later calls of the family match the
template when every size of their key is what the rule gives for their symbols (`Template.match`,
exact on every size: the graph is then the symbolic graph at those sizes), and the symbols are at
least 2 (0 and 1 change what a graph means, broadcasting and empty loops: they are specialized).

Declared dynamic (`mark_dynamic(t, dim)`, torch's `torch._dynamo.mark_dynamic`): the first call of a
family whose input buffers carry marked dims builds the program for all sizes at once. One call
cannot show how the other sizes follow the marked ones, so `guess` reads them off its values: a
size of an input that is not marked stays fixed, and another size equal to a product of marked
sizes (`B`, `B*T`), or a whole multiple of one, follows them. A wrong guess costs a build, never a
value: the placeholder graph of a rule that does not hold fails to build (its shapes disagree) and
the program is built for these sizes, and later calls match the template exactly, as ever.

The program for all sizes is built by lazy/symbolic.py (the graph at placeholder sizes, scheduled,
and its Kernel IR read back as polynomials in the symbols): this module only fits templates to the
sizes of structure keys, and loads without sympy or the scheduler (`import lazy` imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations_with_replacement

from lazy.graph import SCALAR, Buffer, Node, Op

MAX_SYMBOLS = 3
MAX_DEGREE = 3  # of a monomial in the symbols (B*T*C with C static is degree 2: T*T attention is 2)
SIZED_ARGS = (Op.RESHAPE, Op.EXPAND, Op.PAD, Op.SHRINK)


# -- sizes of a structure key ---------------------------------------------------------------------
def _flat(x) -> list[int]:
    out = []
    for v in x:
        if isinstance(v, tuple):
            out += _flat(v)
        else:
            out.append(v)
    return out


def sizes_of(key: tuple) -> tuple[tuple, list[int], list[bool]]:
    """(the key with its sizes erased: the family; the sizes in order; which are sizes of input
    buffers and aranges: the candidates for symbols). Per node: its shape, then the sizes of its
    argument (reshape, expand, pad, shrink), then a buffer's strides and offset."""
    (parts, roots), *rest = key
    erased, ints, leaf = [], [], []
    for (op, arg, dtype, shape), src in parts:
        ints += shape
        leaf += [op in (Op.BUFFER, Op.IOTA)] * len(shape)
        if op in SIZED_ARGS:
            flat = _flat(arg)
            ints += flat
            leaf += [False] * len(flat)
            arg = len(flat)
        if isinstance(src, tuple) and src and src[0] == "buf":
            strides, offset, device = src[2]
            ints += [*strides, offset]
            leaf += [False] * (len(strides) + 1)
            src = ("buf", src[1], device)
        erased.append(((op, arg, dtype, len(shape)), src))
    return (tuple(erased), roots, *rest), ints, leaf


def buffer_dims(key: tuple) -> list[tuple[int, int] | None]:
    """Per size position of `sizes_of(key)`: (slot of the input buffer, dim) for the sizes of a
    BUFFER node's shape, None for the others."""
    (parts, _), *_ = key
    out: list[tuple[int, int] | None] = []
    for (op, arg, _, shape), src in parts:
        buf = isinstance(src, tuple) and src and src[0] == "buf"
        out += [(src[1], d) if buf else None for d in range(len(shape))]
        if op in SIZED_ARGS:
            out += [None] * len(_flat(arg))
        if buf:
            out += [None] * (len(src[2][0]) + 1)
    return out


def marked_positions(key: tuple, buffers: list[Buffer]) -> list[int]:
    """The size positions of `key` that are dims its input buffers were marked dynamic in."""
    return [p for p, bd in enumerate(buffer_dims(key))
            if bd is not None and bd[1] in buffers[bd[0]].dynamic]


def mark_dynamic(t, index) -> None:
    """Declare dim(s) `index` of tensor `t` to change between calls (torch's `mark_dynamic`): the
    first program that reads `t` is built for every size of them (see the module docstring). A
    pending `t` is realized first. Dims of size 0 or 1 are specialized: marking one raises."""
    dims = [index] if isinstance(index, int) else list(index)
    if not dims or any(not isinstance(d, int) or isinstance(d, bool) for d in dims):
        raise TypeError(f"mark_dynamic: index must be an int or a list of ints, got {index!r}")
    shape = tuple(t.shape)
    for d in dims:
        if not -len(shape) <= d < len(shape):
            raise IndexError(f"mark_dynamic: dim {d} is out of range for a tensor of {len(shape)} dims")
        if shape[d] < 2:
            raise ValueError(f"mark_dynamic: dim {d} has size {shape[d]}; sizes 0 and 1 are specialized, "
                             f"dynamic dims are at least 2")
    n = t.realize()._node
    if n.op is Op.STORED:
        n = n.srcs[0]
    b = n.arg
    b.dynamic = b.dynamic | {d % len(shape) for d in dims}


# -- constants that are literals in one family and kernel arguments in another ----------------------
def loose(fam: tuple) -> tuple:
    """A family key with the values of its constants erased. A constant that follows a size is a
    literal at some sizes and a kernel argument at others (a mean over 2 elements divides by the
    literal 2.0, over 3 by an argument): the families of one graph share this key."""
    parts, *rest = fam
    return (tuple(((op, None, dtype, ndim), ()) if op is Op.CONST else ((op, arg, dtype, ndim), src)
                  for (op, arg, dtype, ndim), src in parts), *rest)


def argument_plan(fam: tuple, program_fam: tuple, order: list[Node] | None = None) -> list | None:
    """How a program of family `program_fam` computes a graph of family `fam` (of the same `loose`
    key): for each of the program's scalar arguments, ("slot", i), the graph's own scalar argument
    i, or ("value", v), a literal constant of the graph (`order`: its nodes in key order, whose
    `arg` gives v; None: feasibility only). None when the program cannot: it has a literal where
    the graph has another value or an argument."""
    plan: list = []
    for p, (((op, arg, _, _), src), ((_, parg, _, _), _)) in enumerate(zip(fam[0], program_fam[0])):
        if op is not Op.CONST:
            continue
        if parg == SCALAR:
            plan.append(("slot", src) if arg == SCALAR else ("value", None if order is None else order[p].arg))
        elif parg != arg:
            return None
    return plan


# -- fitting ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """size = c * prod(symbol_k ** exps[k]) + d (exps all zero: the constant d)."""

    c: int
    exps: tuple[int, ...]
    d: int

    def __call__(self, syms: list[int]) -> int:
        m = self.c
        for v, e in zip(syms, self.exps):
            if e:
                m *= v ** e
        return m + self.d if any(self.exps) else self.d

    def expr(self):
        """The rule as a sympy expression in the size symbols."""
        import sympy

        from codegen.kernel_ir import size_symbol

        if not any(self.exps):
            return sympy.Integer(self.d)
        m = sympy.Integer(self.c)
        for k, e in enumerate(self.exps):
            m *= size_symbol(f"d{k}") ** e
        return m + self.d


def _monomials(n: int) -> list[tuple[int, ...]]:
    out = []
    for deg in range(1, MAX_DEGREE + 1):
        for combo in combinations_with_replacement(range(n), deg):
            exps = [0] * n
            for k in combo:
                exps[k] += 1
            out.append(tuple(exps))
    return out


def _fit_one(col: tuple[int, ...], syms: list[list[int]], monomials) -> Rule | None:
    """The simplest rule giving `col[i]` at symbol values `syms[i]` for every instance i."""
    if len(set(col)) == 1:
        return Rule(0, (0,) * len(syms[0]), col[0])
    for form in ("mul", "add", "affine"):
        for exps in monomials:
            ms = [Rule(1, exps, 0)(s) for s in syms]
            if form == "mul":
                if ms[0] == 0 or col[0] % ms[0]:
                    continue
                rule = Rule(col[0] // ms[0], exps, 0)
            elif form == "add":
                rule = Rule(1, exps, col[0] - ms[0])
            else:
                dm = ms[1] - ms[0]
                if dm == 0 or (col[1] - col[0]) % dm:
                    continue
                c = (col[1] - col[0]) // dm
                rule = Rule(c, exps, col[0] - c * ms[0])
            if rule.c and all(rule(s) == v for s, v in zip(syms, col)):
                return rule
    return None


@dataclass(frozen=True)
class Template:
    """The sizes of a family as rules over its symbols (see the module docstring)."""

    symbols: tuple[int, ...]  # position in the sizes of each symbol's defining input size
    rules: tuple[Rule | None, ...]  # per size position (None: a symbol's own position)

    def bind(self, ints: list[int]) -> list[int] | None:
        """The symbols' values for the sizes `ints`, or None when the template does not give them."""
        syms = [ints[p] for p in self.symbols]
        if any(v < 2 for v in syms):
            return None
        for rule, v in zip(self.rules, ints):
            if rule is not None and rule(syms) != v:
                return None
        return syms


def fit(instances: list[list[int]], leaf: list[bool]) -> Template | None:
    """A template giving every instance's sizes, or None (nothing varies at the inputs, a symbol
    below 2, more than MAX_SYMBOLS, or a size that follows no rule)."""
    cols = list(zip(*instances))
    first: dict[tuple, int] = {}  # an input size's values -> its symbol (equal columns: one symbol)
    symbols: list[int] = []
    for p, col in enumerate(cols):
        if leaf[p] and len(set(col)) > 1 and col not in first:
            if _follows(col, [cols[q] for q in symbols]):
                continue  # not a symbol of its own: its rule below gives it
            if len(symbols) == MAX_SYMBOLS or min(col) < 2:
                return None
            first[col] = len(symbols)
            symbols.append(p)
    if not symbols:
        return None
    syms = [[inst[p] for p in symbols] for inst in instances]
    monomials = _monomials(len(symbols))
    rules: list[Rule | None] = []
    for p, col in enumerate(cols):
        if p in symbols:
            rules.append(None)
            continue
        if leaf[p] and col in first:  # another input of the same size: the same symbol
            rules.append(Rule(1, tuple(int(k == first[col]) for k in range(len(symbols))), 0))
            continue
        rule = _fit_one(col, syms, monomials)
        if rule is None:
            return None
        rules.append(rule)
    return Template(tuple(symbols), tuple(rules))


def _follows(col: tuple[int, ...], symbol_cols: list[tuple[int, ...]]) -> bool:
    """Whether input size `col` is a symbol's plus a constant or a whole multiple of it at every
    instance: a sequence of length T and the positions of T + 1 tokens, a flattened (B*C) input
    beside a (B, C) one. Such inputs get no symbol of their own: as independent placeholders they
    would build a graph whose shapes disagree. Two instances may agree by chance (B and T both one
    more); a later size where they do not misses the template (`Template.bind` checks every size)
    and the family is fitted again over more instances."""
    for sc in symbol_cols:
        if len({v - s for v, s in zip(col, sc)}) == 1:
            return True
        if col[0] % sc[0] == 0 and all(v == col[0] // sc[0] * s for v, s in zip(col, sc)):
            return True
    return False


def guess(ints: list[int], leaf: list[bool], marked: list[int]) -> Template | None:
    """A template from one call's sizes whose `marked` positions are symbols (see the module
    docstring), or None (a marked size below 2, more than MAX_SYMBOLS distinct marked sizes)."""
    values: dict[int, int] = {}  # a marked size's value -> its symbol (equal ones: one symbol)
    symbols: list[int] = []
    for p in marked:
        if ints[p] not in values:
            if ints[p] < 2 or len(symbols) == MAX_SYMBOLS:
                return None
            values[ints[p]] = len(symbols)
            symbols.append(p)
    if not symbols:
        return None
    syms = [ints[p] for p in symbols]
    monomials = _monomials(len(symbols))
    fixed = {v for p, v in enumerate(ints) if leaf[p] and p not in marked}
    zero = (0,) * len(symbols)
    marked_set = set(marked)
    rules: list[Rule | None] = []
    for p, v in enumerate(ints):
        if p in symbols:
            rules.append(None)
        elif p in marked_set:
            rules.append(Rule(1, tuple(int(k == values[v]) for k in range(len(symbols))), 0))
        elif leaf[p]:
            rules.append(Rule(0, zero, v))
        else:
            rules.append(_guess_one(v, syms, monomials, fixed) or Rule(0, zero, v))
    return Template(tuple(symbols), tuple(rules))


def _guess_one(v: int, syms: list[int], monomials, fixed: set[int]) -> Rule | None:
    """The rule a size `v` most likely follows, from one call: a product of the symbols, else (when
    `v` is not also the size of an input that stays fixed) a whole multiple of one."""
    for exps in monomials:
        if Rule(1, exps, 0)(syms) == v:
            return Rule(1, exps, 0)
    if v in fixed:
        return None
    for exps in monomials:
        m = Rule(1, exps, 0)(syms)
        if v > m and v % m == 0:
            return Rule(v // m, exps, 0)
    return None


# -- the nodes of a graph in the order of its structure key -----------------------------------------
def nodes_in_key_order(roots: list[Node]) -> list[Node]:
    """The nodes of `roots` in the order `graph.structure_key` records them."""
    index: dict[Node, int] = {}
    order: list[Node] = []
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        n, expanded = stack.pop()
        if expanded:
            index[n] = len(index)
            order.append(n)
            continue
        if n in index:
            continue
        stack.append((n, True))
        for s in reversed(n.srcs):
            if s not in index:
                stack.append((s, False))
    return order
