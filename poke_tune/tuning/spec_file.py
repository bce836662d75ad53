"""Reading a search spec file: YAML (safe, with line numbers), `--set` overrides, and the
one validation whose errors name the file, the line and the key path, e.g.
`search_spaces/cql_alpha.yaml:14: search_space.alpha.low: Input should be greater than 0`.
Relative paths are stored absolute, because Ray trials run in their own working
directories: `dataset.path` against the spec's folder, a local `storage_path` against the
current folder (where results are expected). The generate recipe's behaviour policies
(and a loop's `rounds.opponents`) are pinned (`policies.pin_policy_name`): a checkpoint
path made absolute, `models:/NAME@ALIAS` replaced by the version the alias points to now,
so the recipe, its cache key and the dataset's header name one policy, whatever the alias
does later.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from poke_tune.algos import ALGORITHMS
from poke_tune.tuning.locations import absolute_sqlite, resolve_tracking_uri
from poke_tune.tuning.policies import pin_policy_name
from poke_tune.tuning.spec import PARAM_TYPES, SearchSpec, SpecError, set_dotted

__all__ = ["load_spec", "parse_overrides"]


class _SpecLoader(yaml.SafeLoader):
    """Safe YAML that reads `1e-4` as a number (YAML 1.1 reads it as a string; the spec
    models are strict, so the string would be refused)."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_overrides(pairs: list[str], **options: Any) -> dict[str, Any]:
    """`["network.hidden_sizes=[512,512]", "expectile=0.9"]` -> a nested dict (YAML values);
    `options` (dotted keys as `a__b`) that are not None are set too."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set expectile=0.9")
        set_dotted(result, key, yaml.load(raw, Loader=_SpecLoader))  # 1e-4 is a number
    for key, value in options.items():
        if value is not None:
            set_dotted(result, key.replace("__", "."), value)
    return result


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the key (or list item) at `loc`; None for a key missing from the
    file (a command-line override, a required key left out)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if k.value == part), None)
            if entry is None:
                return None
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_spec(path: Path, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Read and validate a spec file; `overrides` (nested dict) replace values in it."""
    path = Path(path).resolve()
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader: no arbitrary objects
        root = yaml.compose(text, Loader=_SpecLoader)
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}:1: expected a mapping of spec keys, got {type(raw).__name__}")
    _merge(raw, overrides or {})
    problems = [
        f"{path}:{line}: {'.'.join(map(str, loc))}: {message}"
        for loc, line, message in _duplicate_keys(root)
    ]
    try:
        spec = SearchSpec.model_validate(raw, context={"defer_semantic_checks": True})
        found = spec.problems()
    except ValidationError as error:
        found = []
        for issue in error.errors():
            loc = tuple(p for p in issue["loc"] if not str(p).startswith("function-after"))
            found.append(_located(loc, issue))
    if found or problems:
        for loc, message in found:
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(root, loc)
            problems.append(
                f"{path}:{line}: {key}: {message}" if line else f"{path}: {key}: {message}"
            )
        raise SpecError("invalid search spec:\n  " + "\n  ".join(problems))
    return _resolve_paths(spec, path, root)


def _located(loc: tuple[str | int, ...], issue: Any) -> tuple[tuple[str | int, ...], str]:
    """A pydantic error as (key path in the file, message): the union tags pydantic adds
    (`search_space.alpha.float...`, `algorithm.cql.alpah`) are not keys of the file."""
    if loc == ("algorithm",) and issue["type"].startswith("union_tag"):
        return (
            "algorithm",
            "algo",
        ), f"expected one of {', '.join(map(repr, ALGORITHMS))} ({issue['msg']})"
    if loc[:1] == ("algorithm",) and len(loc) > 1 and loc[1] in ALGORITHMS:
        return ("algorithm", *loc[2:]), issue["msg"]
    return tuple(p for p in loc if p not in PARAM_TYPES), issue["msg"]


def _duplicate_keys(
    node: yaml.Node | None, loc: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], int, str]]:
    """(key path, line, message) of every repeated mapping key (YAML keeps the last one
    silently), at the line of the repetition."""
    found: list[tuple[tuple[str | int, ...], int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            line = key.start_mark.line + 1
            if name in seen:
                found.append(((*loc, name), line, f"duplicate key (first at line {seen[name]})"))
            else:
                seen[name] = line
            found += _duplicate_keys(value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, (*loc, index))
    return found


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _resolve_paths(spec: SearchSpec, spec_path: Path, root: yaml.Node | None) -> SearchSpec:
    dataset = spec.dataset
    if dataset.path is not None:
        resolved = (spec_path.parent / dataset.path).resolve()
        if resolved.is_dir():
            line = _line_of(root, ("dataset", "path"))
            raise SpecError(
                f"{spec_path}:{line}: dataset.path: {resolved} is a directory, expected a "
                "dataset file (.jsonl or .jsonl.gz)"
            )
        if not resolved.is_file():
            line = _line_of(root, ("dataset", "path"))
            raise SpecError(f"{spec_path}:{line}: dataset.path: file {resolved} does not exist")
        dataset = dataset.model_copy(update={"path": resolved})
    if dataset.import_ is not None:
        paths = []
        for index, path in enumerate(dataset.import_.paths):
            resolved = (spec_path.parent / path).resolve()
            if not resolved.exists():
                line = _line_of(root, ("dataset", "import", "paths", index))
                raise SpecError(
                    f"{spec_path}:{line}: dataset.import.paths[{index}]: {resolved} does not "
                    "exist (expected a server log, a folder of them, or a replay file)"
                )
            paths.append(resolved)
        recipe = dataset.import_.model_copy(update={"paths": paths})
        dataset = dataset.model_copy(update={"import_": recipe})
    storage = spec.storage_path
    if "://" not in storage:
        storage = str((Path.cwd() / storage).resolve())
    mlflow = spec.mlflow.model_copy(
        update={"tracking_uri": resolve_tracking_uri(spec.mlflow.tracking_uri, storage)}
    )
    if dataset.generate is not None:
        pinned = [
            _pinned(
                name,
                ("dataset", "generate", "policies", index),
                mlflow.tracking_uri,
                spec_path,
                root,
            )
            for index, name in enumerate(dataset.generate.policies)
        ]
        generate = dataset.generate.model_copy(update={"policies": pinned})
        dataset = dataset.model_copy(update={"generate": generate})
    rounds = spec.rounds
    if rounds is not None and rounds.opponents is not None:
        opponents = [
            _pinned(name, ("rounds", "opponents", index), mlflow.tracking_uri, spec_path, root)
            for index, name in enumerate(rounds.opponents)
        ]
        rounds = rounds.model_copy(update={"opponents": opponents})
    searcher = spec.searcher
    if searcher.storage is not None:
        searcher = searcher.model_copy(update={"storage": absolute_sqlite(searcher.storage)})
    update = {
        "dataset": dataset,
        "storage_path": storage,
        "mlflow": mlflow,
        "searcher": searcher,
        "rounds": rounds,
    }
    return spec.model_copy(update=update)


def _pinned(
    name: str,
    loc: tuple[str | int, ...],
    tracking_uri: str | None,
    spec_path: Path,
    root: yaml.Node | None,
) -> str:
    """A behaviour policy's name pinned (`pin_policy_name`), its errors at its line."""
    try:
        return pin_policy_name(name, tracking_uri, spec_path.parent)
    except (ValueError, FileNotFoundError) as error:
        line = _line_of(root, loc)
        raise SpecError(f"{spec_path}:{line}: {'.'.join(map(str, loc))}: {error}") from None
