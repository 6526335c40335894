"""YAML with source positions, so every configuration error names file:line:column.

PyYAML's safe loader forgets where a value came from and silently keeps the last
of two duplicate keys. For a security daemon's policy both are wrong: a typo'd or
doubled key must be an error that points at the line. This module composes the
node tree itself, builds plain Python values (dict/list/str/int/float/bool/None)
and remembers each value's position by its path of keys and indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import yaml

from krsid.errors import ConfigError

PathKey = tuple[object, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class YamlDoc:
    """A parsed document: the data, and where each path of it was written."""

    data: Any
    origin: str
    marks: Mapping[PathKey, tuple[int, int]] = field(default_factory=dict)  # values
    key_marks: Mapping[PathKey, tuple[int, int]] = field(default_factory=dict)  # their keys

    def where(self, path: PathKey, *, at_key: bool = False) -> str:
        """``origin:line:col`` of the value at ``path`` (or of its key), else of its parent."""
        p = tuple(path)
        if at_key and p in self.key_marks:
            line, col = self.key_marks[p]
            return f"{self.origin}:{line}:{col}"
        while p and p not in self.marks:
            p = p[:-1]
        line, col = self.marks.get(p, (1, 1))
        return f"{self.origin}:{line}:{col}"

    def fail(self, path: PathKey, message: str, *, at_key: bool = False) -> NoReturn:
        dotted = ".".join(str(k) if len(str(k)) <= MAX_SHOWN_CHARS else shown(k) for k in path) or "(top level)"
        # One line whatever the input: a key or value may hold a newline.
        raise ConfigError(one_line(f"{self.where(path, at_key=at_key)}: {dotted}: {message}"))


# Bounds on what one document may make the loader do. A config is a few kB; these
# leave room for long lists (a 40,000-path string set parses, and is then refused by
# the map's capacity) while turning hostile input into an error instead of a hang,
# a MemoryError or a RecursionError.
MAX_DOCUMENT_CHARS = 1 << 20  # the config file cap (load_config reads at most this many bytes + 1)
MAX_DEPTH = 50  # nested collections; a config needs about 8
# Values, once aliases are expanded (a billion-laughs bomb has 10**9). The largest
# lists a config can use hold about 2,000 (a string set's map, the policy's
# directories); PyYAML composes ~30,000 values a second here, so this also bounds
# the time a 1 MiB file of one-character values takes (~2 s instead of ~15 s).
MAX_VALUES = 50_000
MAX_INT_CHARS = 100  # an integer literal: 0b + 64 digits + underscores fits; 5,000 digits does not
MAX_SHOWN_CHARS = 60  # of a value quoted in an error message


MAX_MESSAGE_CHARS = 1000  # an error message; the middle of a longer one is cut


def one_line(text: str) -> str:
    """An error message as one line of bounded length: control characters (a newline
    in a key, say) escaped, and the middle of a huge quoted value left out."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > MAX_MESSAGE_CHARS:
        head, tail = MAX_MESSAGE_CHARS * 2 // 3, MAX_MESSAGE_CHARS // 3
        text = f"{text[:head]}...({len(text) - head - tail} characters left out)...{text[-tail:]}"
    return text


def shown(value: object) -> str:
    """repr(value), shortened: an error must not repeat a megabyte of input."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _at(origin: str, mark: yaml.Mark | None) -> str:
    return f"{origin}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{origin}:1:1"


# libyaml's parser (PyYAML's C extension, in Debian's python3-yaml) under PyYAML's
# Python composer: the same nodes and marks as the pure-Python SafeLoader
# (tests/unit/test_yamldoc_parsers.py), parsed ~10x faster. A daemon start or a
# `krsid reload` reads ~35 documents (the catalog's sidecars and the config): the
# catalog took 0.39 s on the host, 0.11 s now; 5.2 s and 3.2 s under the test VM's
# TCG. Only the parser is C: libyaml's own composer is recursive C, which a deeply
# nested document could crash instead of raising.
_PARSER_BASES: tuple[type, ...]
try:
    from yaml._yaml import CParser

    _PARSER_BASES = (CParser,)

    def _init_parser(loader: Any, text: str) -> None:
        CParser.__init__(loader, text)

except ImportError:  # PyYAML built without libyaml
    _PARSER_BASES = (yaml.parser.Parser, yaml.scanner.Scanner, yaml.reader.Reader)

    def _init_parser(loader: Any, text: str) -> None:
        yaml.reader.Reader.__init__(loader, text)
        yaml.scanner.Scanner.__init__(loader)
        yaml.parser.Parser.__init__(loader)


_LOADER_BASES = (yaml.composer.Composer, *_PARSER_BASES, yaml.constructor.SafeConstructor, yaml.resolver.Resolver)


class _BoundedLoader(*_LOADER_BASES):  # type: ignore[misc]  # (bases known at import)
    """A safe loader (libyaml's parser where there is one) whose composer refuses
    nesting deeper than MAX_DEPTH, and more than MAX_VALUES nodes.

    PyYAML's composer is recursive (two Python frames per level): 20,000 nested
    brackets would end in a RecursionError. The scanners and parsers are not recursive.
    """

    def __init__(self, text: str, origin: str) -> None:
        _init_parser(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._origin = origin
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH or self._nodes > MAX_VALUES:
                mark = self.peek_event().start_mark
                if self._depth > MAX_DEPTH:
                    raise ConfigError(f"{_at(self._origin, mark)}: nested deeper than {MAX_DEPTH} levels")
                raise ConfigError(f"{_at(self._origin, mark)}: more than {MAX_VALUES} values")
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def load_yaml(text: str, origin: str) -> YamlDoc:
    """Parse one YAML document; ConfigError (with position) on any problem."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ConfigError(f"{one_line(origin)}: {len(text)} characters; a config is at most {MAX_DOCUMENT_CHARS}")
    try:
        # The pure-Python reader reads the stream here: a NUL or other unacceptable
        # character raises at once (found by tests/unit/test_config_fuzz.py);
        # libyaml's reader raises while parsing (below).
        loader = _BoundedLoader(text, origin)
    except UnicodeEncodeError as e:  # a lone surrogate in a str: libyaml reads UTF-8
        line, col = _line_col(text, e.start)
        raise ConfigError(
            f"{origin}:{line}:{col}: invalid YAML: character #x{ord(text[e.start]):04x}: a lone UTF-16 surrogate"
        ) from None
    except yaml.reader.ReaderError as e:
        raise _reader_error(text, origin, e) from None
    except yaml.YAMLError as e:
        raise ConfigError(one_line(f"{origin}: invalid YAML: {e}")) from None
    try:
        node = loader.get_single_node()
        marks: dict[PathKey, tuple[int, int]] = {}
        key_marks: dict[PathKey, tuple[int, int]] = {}
        data = None
        if node is not None:
            _measure(node, origin)
            data = _build(loader, node, (), marks, key_marks, origin)
    except yaml.reader.ReaderError as e:
        raise _reader_error(text, origin, e) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(one_line(f"{_at(origin, mark)}: invalid YAML: {e.problem or e}")) from None
    except yaml.YAMLError as e:
        raise ConfigError(one_line(f"{origin}: invalid YAML: {e}")) from None
    finally:
        loader.dispose()
    return YamlDoc(data, origin, marks, key_marks)


def _line_col(text: str, index: int) -> tuple[int, int]:
    """Line and column (1-based) of the character at ``index``."""
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def _reader_error(text: str, origin: str, e: yaml.reader.ReaderError) -> ConfigError:
    """An unacceptable character (a NUL, a control character), with its place.
    libyaml counts the position in UTF-8 bytes, PyYAML's reader in characters."""
    index = e.position
    if _PARSER_BASES[0] is not yaml.parser.Parser:
        index = len(text.encode("utf-8")[: e.position].decode("utf-8", "ignore"))
    line, col = _line_col(text, index)
    char = e.character if isinstance(e.character, int) else ord(e.character[:1] or "\0")
    return ConfigError(one_line(f"{origin}:{line}:{col}: invalid YAML: character #x{char:04x}: {e.reason}"))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(root: yaml.Node, origin: str) -> None:
    """Refuse a node graph whose expansion is too big, too deep or endless, before
    expanding it.

    Aliases make the composed document a graph: ``&a [*a]`` contains itself, and ten
    levels of ten aliases each (billion laughs) are 100 nodes that expand to 10**10
    values. Size and depth are computed per distinct node (memoized, iteratively), so
    this costs time linear in the file whatever the expansion would cost. Merge keys
    (<<) are counted as the mappings they merge, which bounds what flattening makes.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size[key] = min(1 + sum(size[id(k)] for k in kids), MAX_VALUES + 1)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_VALUES:
                raise ConfigError(
                    f"{_at(origin, node.start_mark)}: expands to more than {MAX_VALUES} values "
                    "(YAML aliases used too often?)"
                )
            if depth[key] > MAX_DEPTH:
                raise ConfigError(
                    f"{_at(origin, node.start_mark)}: nested deeper than {MAX_DEPTH} levels (with aliases)"
                )
            continue
        if key in size:
            continue
        if key in entered:
            # Entered and not finished: this node is reached again from below itself.
            raise ConfigError(f"{_at(origin, node.start_mark)}: recursive YAML alias (the node contains itself)")
        entered.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


MERGE_TAG = "tag:yaml.org,2002:merge"
PLAIN_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
INT_TAG = "tag:yaml.org,2002:int"


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: PathKey,
    marks: dict[PathKey, tuple[int, int]],
    key_marks: dict[PathKey, tuple[int, int]],
    origin: str,
) -> Any:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in PLAIN_COLLECTION_TAGS:
        # Collections are built here from their structure, so a tag would be ignored
        # silently (!!python/object, !!set, !!omap): refuse it instead.
        raise ConfigError(one_line(f"{_at(origin, node.start_mark)}: unsupported tag {node.tag!r}"))
    if isinstance(node, yaml.MappingNode):
        merges = [k for k, _ in node.value if k.tag == MERGE_TAG]
        if len(merges) > 1:
            # Also keeps flatten_mapping linear (it deletes each << from a list).
            raise ConfigError(f"{_at(origin, merges[1].start_mark)}: duplicate merge key '<<' (give it a list)")
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[object, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(loader, key_node, origin)
            if not isinstance(key, (str, int, bool)) or key is None:
                raise ConfigError(
                    one_line(f"{_at(origin, key_node.start_mark)}: keys must be plain scalars, got {shown(key)}")
                )
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                first = marks.get((*path, key), (0, 0))[0]
                raise ConfigError(
                    one_line(f"{origin}:{line}:{col}: duplicate key {shown(key)} (first on line {first})")
                )
            key_marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(loader, value_node, (*path, key), marks, key_marks, origin)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, n, (*path, i), marks, key_marks, origin) for i, n in enumerate(node.value)]
    return _scalar(loader, node, origin)


def _scalar(loader: yaml.SafeLoader, node: yaml.Node, origin: str) -> Any:
    """Construct a scalar (or a key, which may be anything); bad values are ConfigErrors.

    PyYAML's constructors raise ValueError on some resolved scalars: an integer of more
    than 4,300 digits (Python's int conversion limit), a timestamp like 2024-13-45.
    """
    if node.tag == INT_TAG and isinstance(node.value, str) and len(node.value) > MAX_INT_CHARS:
        raise ConfigError(
            f"{_at(origin, node.start_mark)}: an integer of {len(node.value)} characters; at most {MAX_INT_CHARS}"
        )
    try:
        value = loader.construct_object(node, deep=True)
    except (ValueError, OverflowError, TypeError, KeyError, IndexError, AttributeError) as e:
        # e.g. !!int "" (IndexError), !!bool "maybe" (KeyError), !!timestamp "x" (AttributeError)
        raise ConfigError(one_line(f"{_at(origin, node.start_mark)}: invalid value: {e!s}")) from None
    if isinstance(value, str):
        if "\0" in value:
            # "\0" in a double-quoted string: no path, name or map key of krsid can hold
            # one (os.stat() raises ValueError, C strings end there).
            raise ConfigError(f"{_at(origin, node.start_mark)}: invalid value: a NUL character")
        if not _encodable(value):
            # "\ud800" in a double-quoted string: not UTF-8, so no path, name or key can hold it.
            raise ConfigError(f"{_at(origin, node.start_mark)}: invalid value: a lone UTF-16 surrogate")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- small typed accessors used by config.py and catalog.py ---------------------------------


def expect_mapping(doc: YamlDoc, value: Any, path: PathKey, allowed: set[str] | None = None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.fail(path, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            doc.fail((*path, key), f"keys must be strings, got {shown(key)}")
        if allowed is not None and key not in allowed:
            doc.fail((*path, key), f"unknown key {shown(key)}; allowed: {', '.join(sorted(allowed))}", at_key=True)
    return value


def expect(doc: YamlDoc, value: Any, path: PathKey, kind: type[T], what: str) -> T:
    # bool is an int subclass in Python; YAML 'yes'/'true' must not pass as a number.
    if isinstance(value, bool) and kind is not bool:
        doc.fail(path, f"expected {what}, got a boolean")
    if not isinstance(value, kind):
        doc.fail(path, f"expected {what}, got {_kind(value)} {shown(value)}")
    return value


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)
