"""The package runs on Python 3.10, as pyproject.toml and the README say: 3.10 syntax only, and no stdlib module
or name that 3.10 lacks without a fallback."""

from __future__ import annotations

import ast
import importlib
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "saolctl"
# stdlib modules added in 3.11+, and names added to older modules
NEW_MODULES = {"tomllib", "wsgiref.types"}
NEW_NAMES = {"typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required",
                        "NotRequired", "TypeVarTuple", "Unpack", "dataclass_transform", "override"},
             "enum": {"StrEnum", "ReprEnum", "verify", "EnumCheck"}, "datetime": {"UTC"},
             "asyncio": {"TaskGroup", "timeout", "Runner"}, "hashlib": {"file_digest"}}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Return whether an import sits in the body of a ``try`` whose handlers catch ImportError."""
    child, parent = node, parents.get(node)
    while parent is not None and not isinstance(parent, ast.Try):
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            return False
        child, parent = parent, parents.get(parent)
    if parent is None or child not in parent.body:
        return False
    for handler in parent.handlers:
        caught = handler.type
        names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
        if any(isinstance(n, ast.Name) and n.id in IMPORT_ERRORS for n in names):
            return True
    return False


def unguarded_new_imports(tree: ast.AST) -> list[str]:
    """Return the imports of stdlib modules or names newer than 3.10 that have no ImportError fallback."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            new = [a.name for a in node.names if a.name in NEW_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            new = [node.module] if node.module in NEW_MODULES else [
                f"{node.module}.{a.name}" for a in node.names if a.name in NEW_NAMES.get(node.module, ())]
        else:
            continue
        if new and not _guarded(node, parents):
            found += [f"line {node.lineno}: {name}" for name in new]
    return found


def test_every_module_is_python_310_syntax() -> None:
    assert sources()
    for path in sources():
        ast.parse(path.read_text(), str(path), feature_version=(3, 10))


def test_no_module_imports_what_python_310_lacks_without_a_fallback() -> None:
    problems = {str(p.relative_to(ROOT)): found for p in sources()
                if (found := unguarded_new_imports(ast.parse(p.read_text(), str(p))))}
    assert problems == {}


def test_the_check_sees_an_unguarded_import_and_accepts_a_fallback() -> None:
    assert unguarded_new_imports(ast.parse("import tomllib\n")) == ["line 1: tomllib"]
    assert unguarded_new_imports(ast.parse("from typing import Any, Self\n")) == ["line 1: typing.Self"]
    assert unguarded_new_imports(ast.parse("try:\n    import tomllib\nexcept ValueError:\n    pass\n"))
    fallback = "try:\n    import tomllib\nexcept ModuleNotFoundError:\n    import tomli as tomllib\n"
    assert unguarded_new_imports(ast.parse(fallback)) == []
    assert unguarded_new_imports(ast.parse(fallback.replace("ModuleNotFoundError", "(OSError, ImportError)"))) == []


def test_pyproject_requires_tomli_before_311() -> None:
    from saolctl.cli.options import tomllib  # tomllib, or tomli on 3.10

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.10"
    assert any(d.replace(" ", "").startswith("tomli>=") and "python_version<'3.11'" in d.replace(" ", "")
               for d in meta["dependencies"]), meta["dependencies"]


def test_config_files_are_read_with_tomli_where_tomllib_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    real = pytest.importorskip("tomllib", reason="Python 3.10 has no tomllib: there the real fallback runs")
    import saolctl.cli.options as options

    fake = types.ModuleType("tomli")
    fake.TOMLDecodeError = type("TOMLDecodeError", (ValueError,), {})  # type: ignore[attr-defined]

    def loads(text: str) -> dict:
        try:
            return {**real.loads(text), "read_by": "tomli"}
        except real.TOMLDecodeError as exc:
            raise fake.TOMLDecodeError(str(exc)) from None

    fake.loads = loads  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` fails as on Python 3.10
    monkeypatch.setitem(sys.modules, "tomli", fake)
    try:
        importlib.reload(options)
        assert options.tomllib is fake
        good = tmp_path / "run.toml"
        good.write_text('epochs = 3\nmethod = "cam"\n')
        assert options.read_config_file(good) == {"epochs": 3, "method": "cam", "read_by": "tomli"}
        bad = tmp_path / "bad.toml"
        bad.write_text("epochs = = 3\n")
        with pytest.raises(ValueError, match="is not valid TOML"):
            options.read_config_file(bad)
    finally:
        monkeypatch.undo()
        importlib.reload(options)
    assert options.tomllib is real
