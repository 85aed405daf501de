"""Turns files, directories, stdin and already-parsed objects into Manifests and ScanErrors.

Called by the CLI and the servicer before `rules.evaluate`; hostile input becomes a ScanError
that names the file and document, and never an exception.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from services.posture.domain import Manifest, ScanError, SourceLocation

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_EXPANDED_NODES = 1_000_000
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# Large documents of these kinds are read for identity only: no control looks inside them and
# their bodies (multi-megabyte CRD schemas) dominate parse time.
HEADER_ONLY_KINDS = frozenset({"CustomResourceDefinition"})
HEADER_ONLY_MIN_BYTES = 64 * 1024
_HEADER_KEYS = frozenset({"apiVersion", "kind", "metadata"})

# A document marker after a newline: a literal first character lets the regex engine skip ahead
# (a MULTILINE `^` pattern is tried at every position, and most bytes are in huge CRDs).
_MARKER = re.compile(r"\n(?:---|\.\.\.)(?=[ \t\r\n]|$)")
# Top-level keys of a document that `_parse_header_only` prefixes with a newline.
_TOP_KEY = re.compile(r"\n([A-Za-z_][\w.-]*)[ \t]*:")
_TOP_KIND = re.compile(
    r"\nkind[ \t]*:[ \t]*[\"']?([A-Za-z0-9]+)[\"']?[ \t]*(?:#.*)?$", re.MULTILINE
)
_BLANK_LINE = re.compile(r"[ \t]*(?:#.*)?\r?")
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that keeps YAML 1.1 `=` and timestamps as plain strings, as Kubernetes does."""


def _construct_str(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:value", _construct_str)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_str)


@dataclass(frozen=True)
class _Chunk:
    """One YAML document's text with its 0-based index and 1-based first content line."""

    index: int
    line: int
    text: str


def load_text(text: str | bytes, uri: str) -> tuple[list[Manifest], list[ScanError]]:
    """Parse one file's content (multi-document YAML or JSON) into manifests."""
    decoded = _decode(text)
    if isinstance(decoded, _Problem):
        return [], [ScanError(SourceLocation(uri, 0, 0), decoded.message)]
    if decoded.lstrip().startswith("{"):
        loaded = _load_json(decoded, uri)
        if loaded is not None:
            return loaded
    manifests: list[Manifest] = []
    errors: list[ScanError] = []
    for chunk in _split_documents(decoded):
        location = SourceLocation(uri, chunk.index, chunk.line)
        data = _parse_chunk(chunk)
        if isinstance(data, _Problem):
            errors.append(ScanError(location, data.message))
        elif data is not None:
            _collect(data, location, manifests, errors)
    return manifests, errors


def load_paths(
    paths: Sequence[str], on_progress: Callable[[int, int], None] | None = None
) -> tuple[list[Manifest], list[ScanError]]:
    """Load files, directories (recursively: *.yaml, *.yml, *.json) and "-" for stdin;
    `on_progress(done, total)` is called after each file."""
    manifests: list[Manifest] = []
    sources, errors = read_sources(paths)
    for done, (uri, data) in enumerate(sources, 1):
        found, problems = load_text(data, uri)
        manifests.extend(found)
        errors.extend(problems)
        if on_progress is not None:
            on_progress(done, len(sources))
    return manifests, errors


def read_sources(paths: Sequence[str]) -> tuple[list[tuple[str, bytes]], list[ScanError]]:
    """Read the files `load_paths` would load, as (uri, content) pairs, without parsing them."""
    sources: list[tuple[str, bytes]] = []
    errors: list[ScanError] = []
    for uri in _expand_paths(paths, errors):
        data = _read(uri)
        if isinstance(data, ScanError):
            errors.append(data)
        else:
            sources.append((uri, data))
    return sources, errors


def from_objects(
    objects: Iterable[Mapping[str, Any]], uri: str
) -> tuple[list[Manifest], list[ScanError]]:
    """Wrap already-parsed objects (live cluster objects), expanding `List` kinds."""
    manifests: list[Manifest] = []
    errors: list[ScanError] = []
    for index, obj in enumerate(objects):
        _collect(obj, SourceLocation(uri, index, 0), manifests, errors)
    return manifests, errors


@dataclass(frozen=True)
class _Problem:
    message: str


def _decode(data: str | bytes) -> str | _Problem:
    if len(data) > MAX_FILE_BYTES:
        return _Problem(f"file larger than {MAX_FILE_BYTES} bytes")
    if isinstance(data, str):
        return data
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        if b"\x00" in data[:8192]:
            return _Problem("binary file (NUL bytes), not YAML or JSON")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _Problem(f"not UTF-8 text (binary file?): byte {exc.start}")


def _load_json(text: str, uri: str) -> tuple[list[Manifest], list[ScanError]] | None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    manifests: list[Manifest] = []
    errors: list[ScanError] = []
    _collect(data, SourceLocation(uri, 0, 1), manifests, errors)
    return manifests, errors


def _split_documents(text: str) -> Iterator[_Chunk]:
    """Cut the stream at `---`/`...` lines so one bad document cannot spoil the others."""
    starts = [0, *(match.start() + 1 for match in _MARKER.finditer(text)), len(text)]
    index = 0
    line = 1
    for begin, end in itertools.pairwise(starts):
        chunk = text[begin:end]
        if chunk.startswith("..."):
            chunk = "\n" + chunk.partition("\n")[2]
        offset = _first_content_line(chunk)
        if offset is not None:
            yield _Chunk(index, line + offset, chunk)
            index += 1
        line += chunk.count("\n")


def _first_content_line(chunk: str) -> int | None:
    """0-based line of the first non-blank, non-comment, non-marker line; None if blank."""
    for number, raw in enumerate(chunk.split("\n", 200)):
        if number == 200:
            return number
        rest = raw[3:] if raw.startswith("---") else raw
        if raw.startswith("%") or _BLANK_LINE.fullmatch(rest):
            continue
        return number
    return None


def _parse_chunk(chunk: _Chunk) -> Any:
    if len(chunk.text) > MAX_DOCUMENT_BYTES or (
        len(chunk.text) * 4 > MAX_DOCUMENT_BYTES
        and len(chunk.text.encode("utf-8", "replace")) > MAX_DOCUMENT_BYTES
    ):
        return _Problem(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    if len(chunk.text) >= HEADER_ONLY_MIN_BYTES:
        header = _parse_header_only(chunk.text)
        if header is not None:
            return header
    return _parse_yaml(chunk.text, chunk.line)


def _parse_header_only(text: str) -> dict[str, Any] | None:
    """Parse only apiVersion/kind/metadata of a large document of a HEADER_ONLY_KINDS kind."""
    text = "\n" + text
    kinds = _TOP_KIND.findall(text)
    if len(kinds) != 1 or kinds[0] not in HEADER_ONLY_KINDS:
        return None
    keys = list(_TOP_KEY.finditer(text))
    bounds = zip(keys, [k.start() for k in keys[1:]] + [len(text)], strict=True)
    parts = [text[key.start() + 1 : end] for key, end in bounds if key.group(1) in _HEADER_KEYS]
    parsed = _parse_yaml("\n".join(parts), 1)
    if not isinstance(parsed, dict) or parsed.get("kind") not in HEADER_ONLY_KINDS:
        return None
    return parsed


def _parse_yaml(text: str, first_line: int) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if _may_alias(node, text) and _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            return _Problem(f"aliases expand past {MAX_EXPANDED_NODES} nodes (alias bomb?)")
        return None if node is None else _construct(loader, node)
    except yaml.MarkedYAMLError as exc:
        return _Problem(_yaml_message(exc, first_line))
    except yaml.YAMLError as exc:
        return _Problem(f"invalid YAML: {exc}")
    except RecursionError:
        return _Problem("document nested too deeply")
    except (ValueError, TypeError, OverflowError) as exc:
        return _Problem(f"unreadable value: {exc}")
    finally:
        loader.dispose()


class _Unusual(Exception):
    """A node the fast constructor leaves to PyYAML's (merge keys, other tags, complex keys)."""


_CORE = yaml.constructor.SafeConstructor()
_SCALARS: dict[str, Any] = {
    "tag:yaml.org,2002:str": lambda node: node.value,
    "tag:yaml.org,2002:null": lambda node: None,
    "tag:yaml.org,2002:bool": _CORE.construct_yaml_bool,
    "tag:yaml.org,2002:int": _CORE.construct_yaml_int,
    "tag:yaml.org,2002:float": _CORE.construct_yaml_float,
    # Kept as strings, as Kubernetes does (see _Loader).
    "tag:yaml.org,2002:timestamp": lambda node: node.value,
    "tag:yaml.org,2002:value": lambda node: node.value,
}


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """Build the document from its node tree. PyYAML's constructor is pure Python and most of
    the load time; manifests only need maps, lists and core scalars, built here directly with
    identical results, and anything unusual falls back to PyYAML."""
    try:
        return _fast(node)
    except _Unusual:
        return loader.construct_document(node)


_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _fast(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP:  # !!set, !!omap, !!pairs, local tags: PyYAML's meaning or error
            raise _Unusual
        built = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                raise _Unusual
            built[_fast(key)] = _fast(value)
        return built
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            raise _Unusual
        return [_fast(child) for child in node.value]
    scalar = _SCALARS.get(node.tag)
    if scalar is None:
        raise _Unusual
    return scalar(node)


def _may_alias(node: yaml.Node | None, text: str) -> bool:
    """Aliases need an anchor (&) and a reference (*); most documents have neither."""
    return node is not None and "&" in text and "*" in text


def _yaml_message(exc: yaml.MarkedYAMLError, first_line: int) -> str:
    problem = exc.problem or exc.context or "parse error"
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {problem} (line {first_line + mark.line}, column {mark.column + 1})"


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Node count with every alias expanded, memoised so a billion laughs costs little."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = MAX_EXPANDED_NODES + 1  # a cycle through an alias counts as a bomb
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, memo) + _expanded_size(value, memo)
    memo[id(node)] = min(size, MAX_EXPANDED_NODES + 1)
    return memo[id(node)]


def _collect(
    data: Any, location: SourceLocation, manifests: list[Manifest], errors: list[ScanError]
) -> None:
    """Append the object (or the items of a `List`) at `location` to manifests or errors."""
    if not isinstance(data, Mapping):
        errors.append(ScanError(location, f"document is a {_type_name(data)}, not an object"))
        return
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str):
        errors.append(ScanError(location, "not a Kubernetes object: apiVersion or kind missing"))
        return
    items = data.get("items")
    if kind.endswith("List") and isinstance(items, list):
        for item in items:
            item_kind = kind.removesuffix("List")
            _collect_item(
                item,
                kind=item_kind,
                api_version=api_version,
                location=location,
                manifests=manifests,
            )
        return
    manifests.append(_manifest(data, location, kind, api_version))


def _collect_item(
    item: Any,
    *,
    kind: str,
    api_version: str,
    location: SourceLocation,
    manifests: list[Manifest],
) -> None:
    if not isinstance(item, Mapping):
        return
    item_kind = item.get("kind")
    item_api = item.get("apiVersion")
    resolved_kind = item_kind if isinstance(item_kind, str) and item_kind else kind
    resolved_api = item_api if isinstance(item_api, str) and item_api else api_version
    if resolved_kind:
        manifests.append(_manifest(item, location, resolved_kind, resolved_api))


def _manifest(
    body: Mapping[str, Any], location: SourceLocation, kind: str, api_version: str
) -> Manifest:
    metadata = body.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    namespace, name = meta.get("namespace"), meta.get("name")
    return Manifest(
        location=location,
        api_version=api_version,
        kind=kind,
        namespace=namespace if isinstance(namespace, str) else "",
        name=name if isinstance(name, str) else "",
        body=body,
    )


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _expand_paths(paths: Sequence[str], errors: list[ScanError]) -> Iterator[str]:
    for path in paths:
        if path == "-" or os.path.isfile(path):
            yield path
        elif os.path.isdir(path):
            yield from _walk(path)
        else:
            errors.append(ScanError(SourceLocation(path, 0, 0), "no such file or directory"))


def _walk(root: str) -> Iterator[str]:
    """Manifest files under `root` in a stable order, skipping hidden directories."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(MANIFEST_SUFFIXES):
                yield os.path.join(directory, name)


def _read(uri: str) -> bytes | ScanError:
    try:
        if uri == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        elif os.path.getsize(uri) > MAX_FILE_BYTES:
            return ScanError(SourceLocation(uri, 0, 0), f"file larger than {MAX_FILE_BYTES} bytes")
        else:
            with open(uri, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return ScanError(SourceLocation(uri, 0, 0), f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return ScanError(SourceLocation(uri, 0, 0), f"file larger than {MAX_FILE_BYTES} bytes")
    return data
