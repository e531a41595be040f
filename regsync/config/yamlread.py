"""``sync.yaml`` text to plain data, each key's line kept, the work bounded.

The YAML is composed into nodes first, so every value keeps the line it came from
(:class:`Reader` records it per key path, for the messages of every later check). Aliases and
``<<`` merges are followed here, not by PyYAML: every value built a second time counts against
:data:`MAX_VALUES` and every level against :data:`MAX_DEPTH`, so a "billion laughs" of a few
hundred bytes is refused at the line where it passes the bound instead of taking minutes and
gigabytes. Values as written are bounded by the file's size (the loader's bound).

``x-`` keys are extensions, skipped wherever settings are named; string values go through
``${VAR}`` substitution (``config.variables``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import yaml

from regsync.config.fields import Loc
from regsync.config.problems import Problem, problem_at
from regsync.config.variables import Variables
from regsync.errors import ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_VALUES = 10_000  # values built again through an alias or a merge (a real config: dozens)
MAX_DEPTH = 64  # a real config nests 5 deep; the composer recurses, so bound it before Python does

_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_TOO_BIG = f"aliases expand the document beyond {MAX_VALUES} values"


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses nesting deeper than MAX_DEPTH (it recurses per level).

    The scanner refuses deep ``[``/``{`` first: it keeps a possible key per open bracket and
    walks them all per token, so a line of brackets costs it seconds before the composer sees
    the 65th level.
    """

    _depth = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, _TOO_DEEP, self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
                mark = cast(yaml.error.Mark, event.start_mark)
                raise yaml.composer.ComposerError(None, None, _TOO_DEEP, mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class Reader:
    """Builds plain data from YAML nodes, recording each key's line and ${VAR} problems."""

    def __init__(self, text: str, variables: Variables, filename: str) -> None:
        self.loader = _BoundedLoader(text)
        self.filename = filename
        self.variables = variables
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self._active: set[int] = set()
        self._seen: set[int] = set()
        self._again = 0
        self._written = 1  # line of the last value built as written: where an alias is expanded

    def read(self) -> tuple[object, int]:
        try:
            node = self.loader.get_single_node()
            if node is None:
                return None, 1
            self.lines[()] = node.start_mark.line + 1
            return self._build(node, ()), self.lines[()]
        finally:
            self.loader.dispose()

    def _count(self, node: yaml.Node, again: bool = False) -> None:
        if again or id(node) in self._seen:
            self._again += 1
        else:
            self._seen.add(id(node))
            self._written = node.start_mark.line + 1
        if self._again > MAX_VALUES or len(self._active) >= MAX_DEPTH:
            # Deep through aliases though shallow as written, or wide through aliases.
            problem = _TOO_BIG if self._again > MAX_VALUES else _TOO_DEEP
            raise ConfigError(f"{self.filename}:{self._written}: {problem}")

    def _build(self, node: yaml.Node, loc: Loc) -> object:
        self._count(node)
        if isinstance(node, yaml.ScalarNode):
            value = self.loader.construct_object(node)
            return self._expand(value, loc) if isinstance(value, str) else value
        if id(node) in self._active:
            self.problems.append(problem_at(self.lines, loc, "alias refers to itself"))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            return [self._item(item, (*loc, i)) for i, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))

    def _item(self, node: yaml.Node, loc: Loc) -> object:
        self.lines[loc] = node.start_mark.line + 1
        return self._build(node, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
        # `<<: *anchor` merges: the mapping's own keys win over merged ones, without complaint.
        out: dict[str, object] = {}
        for key_node, value_node, own in self._pairs(node, loc):
            line = key_node.start_mark.line + 1
            if own:
                self._written = line
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(Problem(line, loc, "mapping keys must be plain names"))
                continue
            child = (*loc, key_node.value)
            if _extension(key_node.value, loc):
                # Built all the same, so its anchors and aliases count against the bounds.
                self._build(value_node, child)
                continue
            if key_node.value not in out:
                self.lines[child] = line
                out[key_node.value] = self._build(value_node, child)
            elif own:
                first = f"first at line {self.lines[child]}"
                self.problems.append(Problem(line, child, f"duplicate key ({first})"))
        return out

    def _pairs(
        self, node: yaml.MappingNode, loc: Loc, own: bool = True
    ) -> Iterator[tuple[yaml.Node, yaml.Node, bool]]:
        """The mapping's own pairs, then those of each ``<<`` source in order (earlier wins).

        PyYAML's own merge (``flatten_mapping``) copies pairs eagerly, doubling per level of a
        merge chain; here each pair followed is counted, so such a chain stops at the bound.
        """
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not own:
                self._count(value_node, again=True)
            yield key_node, value_node, own
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode) or id(source) in self._active:
                    message = "<< must merge mappings, and not the mapping itself"
                    line = source.start_mark.line + 1
                    self.problems.append(Problem(line, loc, message))
                    continue
                self._active.add(id(source))
                try:
                    yield from self._pairs(source, loc, own=False)
                finally:
                    self._active.discard(id(source))

    def _expand(self, text: str, loc: Loc) -> str:
        expanded, problems = self.variables.expand(text)
        self.problems.extend(problem_at(self.lines, loc, message) for message in problems)
        return expanded


# Mappings whose keys are data (registry hosts, annotation names), not settings: an `x-` key
# there is a name like any other.
_DATA_MAPS = frozenset({"registries", "annotations"})


def _extension(key: str, loc: Loc) -> bool:
    """Whether ``key`` is an ``x-`` extension key, ignored wherever settings are named."""
    return key.startswith("x-") and not (loc and loc[-1] in _DATA_MAPS)


def yaml_error(exc: yaml.YAMLError, filename: str) -> ConfigError:
    """PyYAML's error as one line naming the file and line; never its quote of the text."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        context = ""
        if exc.context and exc.context_mark is not None:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        problem = exc.problem or "invalid YAML"
        return ConfigError(f"{filename}:{exc.problem_mark.line + 1}: {problem}{context}")
    return ConfigError(f"{filename}: invalid YAML: {exc}")
