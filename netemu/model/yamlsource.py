"""YAML documents that remember where each value came from.

PyYAML's safe loader builds plain Python data and forgets line numbers; error
messages need them. :func:`load_yaml` returns the data together with a map from
key paths (``("ground_stations", 1, "lat_deg")``) to 1-based line numbers, and
rejects duplicate keys, which PyYAML would otherwise silently merge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from netemu.errors import InputError, read_text

KeyPath = tuple[str | int, ...]


def format_key_path(path: KeyPath) -> str:
    """``("a", 1, "b")`` -> ``"a[1].b"``, the way users refer to keys."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class LocatedDocument:
    """Parsed YAML data plus the line of every key path in it."""

    def __init__(self, file: Path, data: Any, lines: dict[KeyPath, int]):
        self.file = file
        self.data = data
        self.lines = lines

    def line_of(self, path: KeyPath) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, path: KeyPath, problem: str) -> InputError:
        return InputError(problem, self.file, format_key_path(path) or None, self.line_of(path))


def load_yaml(file: str | Path) -> LocatedDocument:
    """Parse ``file`` as one YAML document, raising :class:`InputError` on any problem."""
    file = Path(file)
    text = read_text(file)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character: refused before parsing
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise InputError(
            f"invalid YAML: character {chr(exc.character)!a} is not allowed", file, None, line
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise InputError("the file is empty", file)
        lines: dict[KeyPath, int] = {}
        _record_lines(node, (), lines, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(f"invalid YAML: {problem}", file, None, line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {' '.join(str(exc).split())}", file) from None
    finally:
        loader.dispose()
    return LocatedDocument(file, data, lines)


def _record_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: Path) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise InputError(
                    f"duplicate key {key!r} (first given on line {seen[key]})",
                    file,
                    format_key_path((*path, key)),
                    line,
                )
            seen[key] = line
            _record_lines(value_node, (*path, key), lines, file)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, (*path, i), lines, file)
