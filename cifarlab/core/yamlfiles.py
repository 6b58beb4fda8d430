"""The one way the project reads YAML: sized before it is built, so that aliases cannot blow up.

A YAML alias (`*a`) repeats a node without repeating its text: ten lines of nested aliases
declare billions of values ("billion laughs"). PyYAML builds an alias as the same Python object,
cheap in itself, but whatever walks the result afterwards (a deep copy, a merge, the schema
check, an error message printing the value) meets every repetition: a 10-line overlay grew to
19.6 GB (issue 26). `load_yaml` composes the document into its node graph first (aliases still
shared: memory bounded by the text), counts the values the graph expands to and its depth, and
builds Python objects only when both are within the stated limits. `check_expanded_size` makes
the same count over objects already built (the config as Snakemake loaded it; docs/config.md
says what that can and cannot protect). Imports nothing of cifarlab: the workflow layer reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

# libyaml's parser where PyYAML has it (the schema is read on every Snakemake call: 10x faster)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The most values (mappings, lists and scalars, each key counted; aliases counted as often as they
# are expanded) and levels of nesting a YAML document or config may have. The full study config
# is about 1,500 values and 6 levels deep; 8,000 runs are about 200,000 values.
MAX_YAML_VALUES = 2_000_000
MAX_YAML_DEPTH = 50


class YamlTooLarge(ValueError):
    """A YAML document (or a config built from one) expands past MAX_YAML_VALUES or MAX_YAML_DEPTH,
    or refers to itself; refused before it is expanded."""


def _measure(root: Any, children: Callable[[Any], Iterable[Any]], where: str) -> tuple[int, int]:
    """(values, depth) of the tree a graph expands to, each shared node measured once.

    children(node): the nodes directly under `node` (none for a scalar). Raises YamlTooLarge as
    soon as the count passes MAX_YAML_VALUES or a path passes MAX_YAML_DEPTH, and for a node that
    contains itself (a recursive anchor), which would expand without end.
    """
    measured: dict[int, tuple[int, int]] = {}  # id -> (values, depth) of a finished node
    open_nodes: set[int] = set()  # the nodes on the current path

    def visit(node: Any, level: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            raise YamlTooLarge(
                f"{where}: a value contains itself (a recursive alias), which expands without end; "
                "remove the alias that refers to its own anchor"
            )
        if key not in measured:
            if level > MAX_YAML_DEPTH:
                raise _too_large(where, f"more than {MAX_YAML_DEPTH} levels of nesting")
            open_nodes.add(key)
            values, depth = 1, 1
            for child in children(node):
                child_values, child_depth = visit(child, level + 1)
                values, depth = values + child_values, max(depth, child_depth + 1)
                if values > MAX_YAML_VALUES:
                    raise _too_large(where, f"more than {MAX_YAML_VALUES:,} values once its aliases expand")
            open_nodes.discard(key)
            measured[key] = (values, depth)
        values, depth = measured[key]
        if level + depth - 1 > MAX_YAML_DEPTH:
            raise _too_large(where, f"more than {MAX_YAML_DEPTH} levels of nesting once its aliases expand")
        return values, depth

    return visit(root, 1)


def _too_large(where: str, what: str) -> YamlTooLarge:
    return YamlTooLarge(
        f"{where} holds {what} (cifarlab.core.yamlfiles: at most {MAX_YAML_VALUES:,} values and "
        f"{MAX_YAML_DEPTH} levels); refusing it before expanding it. A config this large is a "
        "mistake or an attack (nested aliases `*a` repeat whole subtrees): write the values out"
    )


def _node_children(node: yaml.Node) -> Iterable[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return node.value
    return ()


def _object_children(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return [part for pair in value.items() for part in pair]
    if isinstance(value, list | tuple | set):
        return value
    return ()


def load_yaml(source: str | Path, text: str | None = None, loader: type = YAML_LOADER) -> Any:
    """The one YAML document of file `source` (or of `text`, named `source` in messages), with
    PyYAML's safe loader, refused with YamlTooLarge before it is built when it would expand past
    MAX_YAML_VALUES values or MAX_YAML_DEPTH levels. None for an empty document.

    loader: another PyYAML loader class (yaml.BaseLoader: every scalar stays text).
    """
    if text is None:
        text = Path(source).read_text(encoding="utf-8")
    reader = loader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None
        _measure(node, _node_children, str(source))
        return reader.construct_document(node)
    finally:
        reader.dispose()


def check_expanded_size(value: Any, where: str) -> None:
    """Refuse (YamlTooLarge) a structure already built, such as the config Snakemake loaded, that
    expands past MAX_YAML_VALUES values or MAX_YAML_DEPTH levels: each shared object is counted
    as often as it is referred to, without copying anything."""
    _measure(value, _object_children, where)
