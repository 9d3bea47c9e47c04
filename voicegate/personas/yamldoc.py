"""Parse YAML text into plain data plus a map of where every key and value sits (line, column).

PyYAML's composed nodes carry marks; we build the Python values ourselves from those nodes so that
each mapping entry keeps the position of its key and of its value. Aliases are built once (so a
"billion laughs" document costs no more than its text) and recursive documents do not loop.

Owns: ``parse_yaml`` and ``SourceMap``. Imports nothing of voicegate but ``problems``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voicegate.personas.problems import Problem

__all__ = ["MAX_FILE_BYTES", "Loc", "ParsedYaml", "SourceMap", "parse_yaml"]

MAX_FILE_BYTES = 256 * 1024  # a persona or numbers file is a few KB; refuse anything absurd

Loc = tuple[str | int, ...]
_Pos = tuple[int, int]  # 1-based (line, col)


@dataclass(slots=True)
class SourceMap:
    """Positions of keys and values by path (``("sampling", "text_top_k")``), 1-based."""

    keys: dict[Loc, _Pos] = field(default_factory=dict)
    values: dict[Loc, _Pos] = field(default_factory=dict)

    def value_pos(self, loc: Loc) -> _Pos:
        """Where the value at ``loc`` starts, or the nearest enclosing value's position."""
        return self._nearest(self.values, loc)

    def key_pos(self, loc: Loc) -> _Pos:
        """Where the key of ``loc`` is written, or the nearest enclosing position."""
        if loc in self.keys:
            return self.keys[loc]
        return self._nearest(self.values, loc)

    @staticmethod
    def _nearest(table: dict[Loc, _Pos], loc: Loc) -> _Pos:
        for end in range(len(loc), -1, -1):
            pos = table.get(loc[:end])
            if pos is not None:
                return pos
        return (1, 1)


@dataclass(slots=True)
class ParsedYaml:
    """The document's data (None when unreadable), its source map, and problems found on the way."""

    data: Any
    source_map: SourceMap
    problems: list[Problem]


def _pos(mark: yaml.Mark | None) -> _Pos:
    if mark is None:
        return (1, 1)
    return (mark.line + 1, mark.column + 1)


def _offset_pos(text: str, offset: int) -> _Pos:
    before = text[:offset]
    line = before.count("\n") + 1
    return (line, offset - (before.rfind("\n") + 1) + 1)


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording positions of first visits."""

    def __init__(self, loader: yaml.SafeLoader, file: Path) -> None:
        self._loader = loader
        self._file = file
        self._built: dict[int, Any] = {}
        self.source_map = SourceMap()
        self.problems: list[Problem] = []

    def _error(self, pos: _Pos, message: str) -> None:
        self.problems.append(Problem(self._file, pos[0], pos[1], "error", message))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.source_map.values.setdefault(loc, _pos(node.start_mark))
        if id(node) in self._built:
            return self._built[id(node)]
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            out_list: list[Any] = []
            self._built[id(node)] = out_list
            for index, item in enumerate(node.value):
                out_list.append(self.build(item, (*loc, index)))
            return out_list
        value = self._loader.construct_object(node, deep=True)
        self._built[id(node)] = value
        return value

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._built[id(node)] = out
        self._loader.flatten_mapping(node)  # resolves '<<' merge keys in place
        seen: dict[str, _Pos] = {}
        for key_node, value_node in node.value:
            key_pos = _pos(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self._error(key_pos, "a key must be plain text, not a list or mapping")
                continue
            key = self._loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                self._error(
                    key_pos,
                    f"key {key_node.value!r} is read as {type(key).__name__}, not text: "
                    f"put it in quotes ('{key_node.value}')",
                )
                continue
            if key in seen:
                line, col = seen[key]
                self._error(key_pos, f"duplicate key '{key}' (first defined at line {line}:{col})")
                continue
            seen[key] = key_pos
            self.source_map.keys.setdefault((*loc, key), key_pos)
            out[key] = self.build(value_node, (*loc, key))
        return out


def parse_yaml(raw: bytes, file: Path) -> ParsedYaml:
    """Decode and parse one YAML document; never raises for bad input (problems say what is wrong)."""
    smap = SourceMap()
    if len(raw) > MAX_FILE_BYTES:
        msg = f"file is {len(raw)} bytes; at most {MAX_FILE_BYTES} are accepted"
        return ParsedYaml(None, smap, [Problem(file, 1, 1, "error", msg)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start].decode("utf-8", "replace")
        line, col = _offset_pos(prefix, len(prefix))
        msg = f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded"
        return ParsedYaml(None, smap, [Problem(file, line, col, "error", msg)])
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
        node = loader.get_single_node()
        if node is None:
            msg = "the file is empty; expected a mapping of fields"
            return ParsedYaml(None, smap, [Problem(file, 1, 1, "error", msg)])
        builder = _Builder(loader, file)
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        line, col = _pos(exc.problem_mark or exc.context_mark)
        parts = [p for p in (exc.context, exc.problem) if p]
        msg = "YAML syntax: " + ", ".join(parts)
        if exc.context_mark is not None and exc.problem_mark is not None:
            start = _pos(exc.context_mark)
            if start != (line, col):
                msg += f" (the construct started at line {start[0]}:{start[1]})"
        return ParsedYaml(None, smap, [Problem(file, line, col, "error", msg)])
    except yaml.reader.ReaderError as exc:
        line, col = _offset_pos(text, min(exc.position, len(text)))
        code = exc.character if isinstance(exc.character, int) else 0
        msg = f"YAML syntax: character U+{code:04X} is not allowed (control characters)"
        return ParsedYaml(None, smap, [Problem(file, line, col, "error", msg)])
    except yaml.YAMLError as exc:  # any other PyYAML complaint: still a problem, never a crash
        return ParsedYaml(None, smap, [Problem(file, 1, 1, "error", f"YAML: {exc}")])
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:
        # PyYAML's scalar constructors can fail this way on odd explicit tags (!!timestamp x)
        return ParsedYaml(
            None, smap, [Problem(file, 1, 1, "error", f"YAML: unreadable value: {exc}")]
        )
    except RecursionError:
        msg = "YAML nesting is too deep"
        return ParsedYaml(None, smap, [Problem(file, 1, 1, "error", msg)])
    finally:
        if loader is not None:
            loader.dispose()
    return ParsedYaml(data, builder.source_map, builder.problems)
