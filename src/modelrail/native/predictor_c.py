"""LightGBM model text → C source that predicts exactly what LightGBM predicts.

The compiled predictor (``MODELRAIL_PREDICTOR=compiled``, see ``builder`` and ``loader``) turns
each tree into straight-line C: one or two compares per node and, for trees of up to
64 leaves, no branch at all (``_exit_leaf_masks``; deeper trees become nested
``if``s). Each tree runs over the whole batch before the next, while its code is
hot. Batches of ``LANES_FROM`` rows or more take vector code that evaluates a tree
for four rows at once (``_lane_tree``: GCC's vector extensions, AVX2 with
``-mavx2``); smaller ones take row code (``_row_tree``), which is half the size and
so faster when fetching the code is most of the work. On the benchmark model and
varied 100-row batches the row code is ~4 times as fast as LightGBM's own predictor
and the vector code ~1.8 times as fast again; nested ``if``s were as fast only on a
batch repeated until the CPU had learnt its branches. Exactness is the point: both
codes reproduce, decision by decision, what LightGBM 4's ``Tree::NumericalDecision``
and ``Tree::CategoricalDecision`` do, the predictor's row preparation (values within
``kZeroThreshold`` of zero become 0), the per-class summation order
(``GBDT::PredictRaw``; each row's sum is the same chain of additions in a lane) and
the objective's output transform (softmax, sigmoid, identity), so the results are
the same doubles, bit for bit.

Why not treelite/TL2cgen, the library made for this: its generated code marks a
missing value with an ``int`` written over the same ``union`` as the ``double``, so a
real value whose low 32 bits are all ones (200.49999999999997 is one) is read as
missing and takes the wrong branch. Measured on the benchmark model, it gave a
different class for that input. lleaves is not exact either (``docs/benchmarks.md``).

Models this module does not reproduce exactly (linear trees, random-forest averaging,
objectives other than multiclass, binary and the identity regressions) are refused
with ``Unsupported``; the service then keeps LightGBM's own predictor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from modelrail.native.trees import (
    CATEGORICAL_MASK,
    DEFAULT_LEFT_MASK,
    LANES_FROM,
    MISSING_NAN,
    MISSING_ZERO,
    Tree,
    TreeModel,
)

# LightGBM's kZeroThreshold is declared ``const double kZeroThreshold = 1e-35f``.
_ZERO_THRESHOLD = "((double)1e-35f)"


def literal(value: float) -> str:
    """A C double literal that denotes exactly ``value`` (hex floats are exact)."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    return value.hex()


def _condition(tree: Tree, node: int, index: int, lanes: bool) -> str:
    """The C condition under which LightGBM 4 goes left at ``node``: an int 0/1 for
    one row (``x``), or a ``lanes`` mask of 0/-1 per row for four rows (``X(f)``).

    Mirrors ``Tree::NumericalDecision`` / ``Tree::CategoricalDecision``; the values
    are the rows after the predictor's preparation (within kZeroThreshold is 0)."""
    feature = tree.split_feature[node]
    decision = tree.decision_type[node]
    value = f"X({feature})" if lanes else f"x[{feature}]"
    negate = "~" if lanes else "!"
    default_left = bool(decision & DEFAULT_LEFT_MASK)
    missing = (decision >> 2) & 3
    if decision & CATEGORICAL_MASK:
        cat = int(tree.threshold[node])
        start, end = tree.cat_boundaries[cat], tree.cat_boundaries[cat + 1]
        # The bitset's name is unique per node; the helper repeats LightGBM's cast,
        # negative test, NaN rule and FindInBitset.
        helper = "go_left_categorical4" if lanes else "go_left_categorical"
        return f"{helper}({value}, {missing}, cat_{index}_{node}, {end - start})"
    # One or two compares joined by bitwise | and &, so that nothing branches. A
    # comparison with NaN is false (in C and in GCC's vector compares alike), so
    # not(x > t) is "NaN or x <= t"; and after the row preparation, LightGBM's
    # IsZero(x) is x == 0.0.
    threshold = literal(tree.threshold[node])
    left_or_nan = f"{negate}({value} > {threshold})"
    left = f"({value} <= {threshold})"
    if missing == MISSING_NAN:
        return left_or_nan if default_left else left
    if missing == MISSING_ZERO:
        # NaN becomes 0.0 first, and zero takes the default direction.
        if default_left:
            return f"({left_or_nan} | ({value} == 0.0))"
        return f"({left} & ({value} != 0.0))"
    # MissingType::None: NaN is compared as 0.0.
    return left_or_nan if tree.threshold[node] >= 0.0 else left


def _bitsets(tree: Tree, index: int) -> Iterator[str]:
    for node, decision in enumerate(tree.decision_type):
        if decision & CATEGORICAL_MASK:
            cat = int(tree.threshold[node])
            words = tree.cat_threshold[tree.cat_boundaries[cat] : tree.cat_boundaries[cat + 1]]
            body = ", ".join(f"{w}u" for w in words) or "0u"
            yield f"static const uint32_t cat_{index}_{node}[] = {{{body}}};"


def _leaf_order(tree: Tree) -> list[int]:
    """The tree's leaves from left to right."""
    order: list[int] = []
    pending = [0]
    while pending:
        node = pending.pop()
        if node < 0:
            order.append(~node)
        else:
            pending += [tree.right_child[node], tree.left_child[node]]
    return order


def _exit_leaf_masks(tree: Tree) -> tuple[list[int], list[int]]:
    """QuickScorer's exit-leaf rule, for one tree: the leaves in left-to-right order,
    and per node the bit set of leaves that stay reachable when the node sends a row
    right (its left subtree's leaves removed). ANDing the sets of every node that
    sends a row right leaves the row's leaf as the lowest bit: no branch, and so no
    misprediction, however the rows vary."""
    order = _leaf_order(tree)
    position = {leaf: place for place, leaf in enumerate(order)}

    def leaves_under(child: int) -> list[int]:
        if child < 0:
            return [position[~child]]
        return leaves_under(tree.left_child[child]) + leaves_under(tree.right_child[child])

    keep = [
        ~sum(1 << place for place in leaves_under(tree.left_child[node])) & (2**64 - 1)
        for node in range(tree.num_leaves - 1)
    ]
    return order, keep


def _leaf_values(tree: Tree, index: int, order: list[int]) -> str:
    values = ", ".join(literal(tree.leaf_value[leaf]) for leaf in order)
    return f"static const double tree_{index}_values[{tree.num_leaves}] = {{{values}}};"


def _row_tree(tree: Tree, index: int, width: int) -> str:
    """``tree_N``: adds the tree's value to the scores of n rows (``stride`` apart),
    row by row: trees of up to 64 leaves without branches, deeper ones as nested
    ``if``s. Kept out of line, so that the loop runs one tree's code while it is hot."""
    lines = [f"static inline double tree_{index}_leaf(const double* x) {{"]
    if tree.num_leaves == 1:
        lines.append(f"  return {literal(tree.leaf_value[0])};")
    elif tree.num_leaves <= 64:
        order, keep = _exit_leaf_masks(tree)
        lines.insert(0, _leaf_values(tree, index, order))
        lines.append("  uint64_t reachable = ~0ull;")
        lines.extend(
            f"  reachable &= {mask:#x}ull | (0ull - (uint64_t)"
            f"{_condition(tree, node, index, lanes=False)});"
            for node, mask in enumerate(keep)
        )
        lines.append(f"  return tree_{index}_values[__builtin_ctzll(reachable)];")
    else:

        def emit(child: int, depth: int) -> None:
            pad = "  " * depth
            if child < 0:
                lines.append(f"{pad}return {literal(tree.leaf_value[~child])};")
                return
            lines.append(f"{pad}if ({_condition(tree, child, index, lanes=False)}) {{")
            emit(tree.left_child[child], depth + 1)
            lines.append(f"{pad}}} else {{")
            emit(tree.right_child[child], depth + 1)
            lines.append(f"{pad}}}")

        emit(0, 1)
    lines += [
        "}",
        f"NOINLINE static void tree_{index}(const double* x, int64_t n, double* score,",
        "    int64_t stride) {",
        f"  for (int64_t r = 0; r < n; ++r) score[r * stride] += "
        f"tree_{index}_leaf(x + r * {width});",
        "}",
    ]
    return "\n".join(lines)


def _lane_tree(tree: Tree, index: int) -> str:
    """``tree_N_x4``: the same tree for batches, four rows per vector (``lanes`` rows
    stored feature by feature, a multiple of four): per node a compare, an OR and an
    AND for four rows. It reads the leaf values table that ``_row_tree`` declares."""
    _, keep = _exit_leaf_masks(tree)
    lines = [
        f"NOINLINE static void tree_{index}_x4(const double* restrict xt, int64_t lanes,",
        "    double* restrict score) {",
        "  for (int64_t r = 0; r < lanes; r += 4) {",
        "    v4i reachable = ALL_LEAVES;",
    ]
    lines.extend(
        f"    reachable &= (int64_t){mask:#x}ull | {_condition(tree, node, index, lanes=True)};"
        for node, mask in enumerate(keep)
    )
    leaf = ", ".join(
        f"tree_{index}_values[__builtin_ctzll((uint64_t)reachable[{lane}])]" for lane in range(4)
    )
    lines += [f"    *(v4d*)(score + r) += (v4d){{{leaf}}};", "  }", "}"]
    return "\n".join(lines)


_PRELUDE = """\
/* Generated by modelrail.native.predictor_c from a LightGBM text model. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ZERO_THRESHOLD {zero}
#define NOINLINE __attribute__((noinline))
/* Batches of LANES_FROM rows or more take the vector code; smaller ones, whose cost
   is mostly fetching the code, the row code, which is about half its size. */
#define LANES_FROM {lanes_from}

/* Four rows per vector, with GCC's (and clang's) vector extensions: AVX2 registers
   with -mavx2, pairs of SSE2 registers (or the target's own) otherwise. A compare
   gives 0 or -1 per lane, with C's rules for NaN. */
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4i __attribute__((vector_size(32)));
typedef int32_t v4si __attribute__((vector_size(16)));
typedef uint32_t v4su __attribute__((vector_size(16)));
#define ALL_LEAVES ((v4i){{-1, -1, -1, -1}})
/* Feature f of the four rows from r: the rows are stored feature by feature. */
#define X(f) (*(const v4d*)(xt + (f) * lanes + r))

/* Tree::CategoricalDecision without branches. LightGBM: int c = (int)v; if (c < 0)
   right; else if (isnan(v)) {{ if (missing_type == 2) right; c = 0; }}; then the bit
   of c, right if c is past the bitset. The cast is LightGBM's own, so NaN and
   out-of-range values convert as in its build (on x86-64 to INT_MIN: right). */
static inline int go_left_categorical(double v, int missing_type, const uint32_t* bits,
                                      unsigned words) {{
  int cast = (int)v;
  int nan = isnan(v);
  int category = nan ? 0 : cast;
  unsigned word = (unsigned)category >> 5;
  int inside = word < words;
  uint32_t bitset = bits[inside ? word : 0];
  return (cast >= 0) & !(nan & (missing_type == 2)) & inside
         & (int)((bitset >> ((unsigned)category & 31u)) & 1u);
}}

/* The same for four rows, as a 0/-1 mask per lane; the vector cast is the same
   instruction family (cvttpd2dq: INT_MIN for NaN and out-of-range values). */
static inline v4i go_left_categorical4(v4d v, int missing_type, const uint32_t* bits,
                                       unsigned words) {{
  v4si cast = __builtin_convertvector(v, v4si);
  v4si nan = __builtin_convertvector(v != v, v4si);
  v4si category = cast & ~nan;
  v4su word = (v4su)category >> 5;
  v4si inside = (v4si)(word < words);
  v4su safe = (v4su)(inside & (v4si)word);
  /* One word (up to 32 categories, the usual case) needs no per-lane loads. */
  v4su bitset = words == 1 ? (v4su){{bits[0], bits[0], bits[0], bits[0]}}
                           : (v4su){{bits[safe[0]], bits[safe[1]], bits[safe[2]], bits[safe[3]]}};
  v4si bit = (v4si)((bitset >> ((v4su)category & 31u)) & 1u);
  v4si left = (cast >= 0) & ~(nan & -(missing_type == 2)) & inside & -bit;
  return __builtin_convertvector(left, v4i);
}}
"""


def _transform(model: TreeModel) -> list[str]:
    """The objective's ConvertOutput, in place on one row's scores ``s``."""
    k = model.trees_per_iteration
    if model.objective == "multiclass":
        # Common::Softmax (std::max(s[k], wmax) is s[k] < wmax ? wmax : s[k]).
        return [
            "double wmax = s[0];",
            f"for (int k = 1; k < {k}; ++k) wmax = s[k] < wmax ? wmax : s[k];",
            "double wsum = 0.0;",
            f"for (int k = 0; k < {k}; ++k) {{ s[k] = exp(s[k] - wmax); wsum += s[k]; }}",
            f"for (int k = 0; k < {k}; ++k) s[k] /= wsum;",
        ]
    if model.objective == "binary":
        return [f"s[0] = 1.0 / (1.0 + exp(-{literal(model.sigmoid)} * s[0]));"]
    return []


def generate(model: TreeModel, num_iteration: int | None) -> str:
    """C source with ``int modelrail_predict(const double* rows, int64_t n, double* out)``:
    ``rows`` is n x num_features row-major, ``out`` n x trees_per_iteration; it
    returns 0, -1 when it cannot allocate its working copies of the rows, -2 when it
    was built with ``-mavx2`` and this CPU has no AVX2, or -3 when an answer is not a
    finite double (``modelrail_checks_finite`` says that it checks)."""
    iterations = model.iterations
    if num_iteration is not None and 0 < num_iteration < iterations:
        iterations = num_iteration
    k, width = model.trees_per_iteration, model.num_features
    trees = model.trees[: iterations * k]
    parts = [_PRELUDE.format(zero=_ZERO_THRESHOLD, lanes_from=LANES_FROM)]
    lane_trees = [1 < tree.num_leaves <= 64 for tree in trees]
    for index, tree in enumerate(trees):
        parts.extend(_bitsets(tree, index))
        parts.append(_row_tree(tree, index, width))
        if lane_trees[index]:
            parts.append(_lane_tree(tree, index))
    # GBDT::PredictRaw's order for every row: iteration by iteration, class by class.
    row_calls = [f"    tree_{i}(x, n, out + {i % k}, {k});" for i in range(len(trees))]
    lane_calls = [
        f"    tree_{i}_x4(xt, lanes, score + {i % k} * lanes);"
        if lane_trees[i]
        else f"    tree_{i}(x, n, score + {i % k} * lanes, 1);"
        for i in range(len(trees))
    ]
    body = [
        "int modelrail_predict(const double* rows, int64_t n, double* out) {",
        "#ifdef __AVX2__",
        "  /* Built with -mavx2: refuse (rather than crash) on a CPU without AVX2. */",
        "  __builtin_cpu_init();",
        '  if (!__builtin_cpu_supports("avx2")) return -2;',
        "#endif",
        "  if (n <= 0) return 0;",
        f"  double* x = malloc(sizeof(double) * {width} * n);",
        "  if (x == NULL) return -1;",
        f"  for (int64_t i = 0; i < n * {width}; ++i) {{",
        "    double v = rows[i];",
        "    /* The predictor keeps a value only if |v| > kZeroThreshold or NaN. */",
        "    x[i] = (fabs(v) > ZERO_THRESHOLD || isnan(v)) ? v : 0.0;",
        "  }",
        f"  memset(out, 0, sizeof(double) * {k} * n);",
        "  if (n < LANES_FROM) {",
        *row_calls,
        "  } else {",
        "    /* The rows feature by feature (padded with zeros to a multiple of four) and",
        "       the scores class by class, for the vector code. */",
        "    int64_t lanes = (n + 3) & ~(int64_t)3;",
        f"    double* xt = aligned_alloc(32, sizeof(double) * {width} * lanes);",
        f"    double* score = aligned_alloc(32, sizeof(double) * {k} * lanes);",
        "    if (xt == NULL || score == NULL) {",
        "      free(xt);",
        "      free(score);",
        "      free(x);",
        "      return -1;",
        "    }",
        f"    memset(xt, 0, sizeof(double) * {width} * lanes);",
        f"    memset(score, 0, sizeof(double) * {k} * lanes);",
        "    for (int64_t r = 0; r < n; ++r) {",
        f"      for (int f = 0; f < {width}; ++f) xt[f * lanes + r] = x[r * {width} + f];",
        "    }",
        *lane_calls,
        "    for (int64_t r = 0; r < n; ++r) {",
        f"      for (int c = 0; c < {k}; ++c) out[r * {k} + c] = score[c * lanes + r];",
        "    }",
        "    free(xt);",
        "    free(score);",
        "  }",
        "  free(x);",
    ]
    transform = _transform(model)
    if transform:
        body.append("  for (int64_t r = 0; r < n; ++r) {")
        body.append(f"    double* s = out + r * {k};")
        body.extend("    " + line for line in transform)
        body.append("  }")
    body += [
        "  /* Never an answer that is not a finite double (an overflowing sum of leaves). */",
        f"  for (int64_t i = 0; i < n * {k}; ++i) if (!isfinite(out[i])) return -3;",
        "  return 0;",
        "}",
        "const int modelrail_checks_finite = 1;",
        "",
    ]
    parts.append("\n".join(body))
    return "\n\n".join(parts)
