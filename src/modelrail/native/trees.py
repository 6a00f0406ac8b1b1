"""LightGBM's text model, read: the parts of its trees that prediction uses.

``parse`` refuses (``Unsupported``) what the generated code would not reproduce
exactly: linear trees, random-forest averaging, objectives other than multiclass,
binary and the identity regressions. The generator (``predictor_c``) writes C from a
``TreeModel``; the loader (``loader``) parses the model again to probe what it loads.
"""

from __future__ import annotations

import dataclasses

from modelrail.kernel.errors import ModelrailError

# Objectives whose LightGBM output transform is the identity (no ``sqrt`` option).
_IDENTITY_OBJECTIVES = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}

MISSING_ZERO, MISSING_NAN = 1, 2  # MissingType::Zero and ::NaN; ::None is 0

CATEGORICAL_MASK, DEFAULT_LEFT_MASK = 1, 2
# Batches of this many rows or more take the generated vector code, smaller ones its
# row code (``predictor_c``); a compiled object is verified on both (``loader.verify``).
LANES_FROM = 4


class Unsupported(ModelrailError, ValueError):
    """The model uses a LightGBM feature the generated code does not reproduce."""


@dataclasses.dataclass(frozen=True)
class Tree:
    num_leaves: int
    split_feature: tuple[int, ...]
    threshold: tuple[float, ...]
    decision_type: tuple[int, ...]
    left_child: tuple[int, ...]
    right_child: tuple[int, ...]
    leaf_value: tuple[float, ...]
    cat_boundaries: tuple[int, ...]
    cat_threshold: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TreeModel:
    """The parts of a LightGBM text model that prediction reads."""

    num_features: int
    trees_per_iteration: int
    objective: str
    sigmoid: float
    trees: tuple[Tree, ...]

    @property
    def iterations(self) -> int:
        return len(self.trees) // self.trees_per_iteration


def parse(model_text: str) -> TreeModel:
    """Read a LightGBM ``model_to_string()`` text; ``Unsupported`` for what the
    generated code would not reproduce exactly."""
    header: dict[str, str] = {}
    blocks: list[dict[str, str]] = []
    current = header
    for line in model_text.splitlines():
        if line.startswith("Tree="):
            current = {}
            blocks.append(current)
        elif line == "end of trees":
            break
        elif line == "average_output":
            raise Unsupported("random-forest models (average_output)")
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    try:
        objective, *options = header["objective"].split()
        trees_per_iteration = int(header["num_tree_per_iteration"])
        num_features = int(header["max_feature_idx"]) + 1
    except (KeyError, ValueError) as exc:
        raise Unsupported(f"not a LightGBM text model: {exc}") from None
    settings = dict(option.partition(":")[::2] for option in options)
    if objective == "multiclass":
        if int(settings.get("num_class", 0)) != trees_per_iteration:
            raise Unsupported("multiclass with num_class != num_tree_per_iteration")
    elif objective == "binary":
        if trees_per_iteration != 1:
            raise Unsupported("binary with more than one tree per iteration")
    elif objective not in _IDENTITY_OBJECTIVES or "sqrt" in settings:
        raise Unsupported(f"objective {header['objective']!r}")
    if not blocks or len(blocks) % trees_per_iteration:
        raise Unsupported(f"{len(blocks)} trees for {trees_per_iteration} per iteration")
    return TreeModel(
        num_features=num_features,
        trees_per_iteration=trees_per_iteration,
        objective=objective,
        sigmoid=float(settings.get("sigmoid", 1.0)),
        trees=tuple(_tree(block) for block in blocks),
    )


def _tree(block: dict[str, str]) -> Tree:
    if block.get("is_linear", "0") != "0":
        raise Unsupported("linear trees")

    def ints(key: str) -> tuple[int, ...]:
        return tuple(int(v) for v in block.get(key, "").split())

    def floats(key: str) -> tuple[float, ...]:
        return tuple(float(v) for v in block.get(key, "").split())

    tree = Tree(
        num_leaves=int(block["num_leaves"]),
        split_feature=ints("split_feature"),
        threshold=floats("threshold"),
        decision_type=ints("decision_type"),
        left_child=ints("left_child"),
        right_child=ints("right_child"),
        leaf_value=floats("leaf_value"),
        cat_boundaries=ints("cat_boundaries"),
        cat_threshold=ints("cat_threshold"),
    )
    internal = tree.num_leaves - 1
    sizes = {
        len(tree.split_feature),
        len(tree.threshold),
        len(tree.decision_type),
        len(tree.left_child),
        len(tree.right_child),
    }
    if sizes != {internal} or len(tree.leaf_value) != tree.num_leaves:
        raise Unsupported("a tree whose node arrays disagree with num_leaves")
    return tree
