"""Layering, checked on the sources (AST): experiments/ is a leaf, and no module uses another's private names.

* A module in ``experiments/`` imports only ``xattr``, ``experiments.cli``, ``configs`` and third-party packages:
  never another driver (what two programs share belongs in ``xattr/``).
* No module (library, drivers, tests, tools) imports a ``_private`` name from another project module or reads one
  as an attribute (``module._name``). The library's private helper modules (``xattr._checks``, ``xattr._loop``,
  ...) are shared inside ``xattr`` only.
* Drivers stay thin: each ``experiments/*.py`` is at most 250 lines, and no function in it exceeds 60 lines.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROJECT = ("xattr", "experiments", "tests", "configs", "tools")
MAX_DRIVER_LINES = 250
MAX_FUNCTION_LINES = 60


def _sources() -> list[pathlib.Path]:
  return sorted(p for top in PROJECT for p in (ROOT / top).rglob("*.py"))


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _is_private(name: str) -> bool:
  return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ""
  base = module.split(".")
  base = base[:len(base) - node.level + (1 if _module_name_is_package(module) else 0)]
  return ".".join(base + ([node.module] if node.module else []))


def _module_name_is_package(module: str) -> bool:
  return (ROOT / module.replace(".", "/") / "__init__.py").exists()


def _is_project(module: str) -> bool:
  return module.split(".")[0] in PROJECT


def _is_module(dotted: str) -> bool:
  path = ROOT / dotted.replace(".", "/")
  return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def violations(path: pathlib.Path) -> list[str]:
  """The layering rules ``path`` breaks, one message each."""
  module = _module_name(path)
  tree = ast.parse(path.read_text(), filename=str(path))
  out: list[str] = []
  imported_project_names: set[str] = set()
  in_library = module.split(".")[0] == "xattr"
  for node in ast.walk(tree):
    targets: list[tuple[str, str]] = []          # (imported module, bound name)
    if isinstance(node, ast.Import):
      for alias in node.names:
        targets.append((alias.name, alias.asname or alias.name.split(".")[0]))
        if _is_project(alias.name):
          imported_project_names.add(alias.asname or alias.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom):
      source = _resolve(module, node)
      for alias in node.names:
        full = f"{source}.{alias.name}"
        targets.append((full if _is_module(full) else source, alias.asname or alias.name))
        if _is_project(source):
          imported_project_names.add(alias.asname or alias.name)
          if _is_private(alias.name):
            private_module_ok = in_library and source.split(".")[0] == "xattr" and _is_module(full)
            if not private_module_ok:
              out.append(f"{path.relative_to(ROOT)}:{node.lineno} imports private name {alias.name!r} from {source}")
    for imported, _ in targets:
      if module.startswith("experiments.") and imported.startswith("experiments.") and imported != "experiments.cli":
        out.append(f"{path.relative_to(ROOT)}:{node.lineno} imports driver {imported} (drivers are a leaf layer: "
                   "move what is shared into xattr/)")
      if module.startswith("experiments.") and imported.startswith("tests"):
        out.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {imported} from a driver")
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
        and node.value.id in imported_project_names):
      out.append(f"{path.relative_to(ROOT)}:{node.lineno} reads private name {node.value.id}.{node.attr}")
  return out


def test_scanner_catches_what_it_must(tmp_path, monkeypatch):
  # The scanner itself can fail: a driver importing a driver and a private name is reported.
  fake = ROOT / "experiments" / "_layering_probe_tmp.py"
  fake.write_text("from experiments import dfs\nfrom xattr.parallel import _check_mesh\n"
                  "from xattr import parallel\nparallel._positive_int\n")
  try:
    found = violations(fake)
  finally:
    fake.unlink()
  assert any("imports driver experiments.dfs" in v for v in found), found
  assert any("private name '_check_mesh'" in v for v in found), found
  assert any("parallel._positive_int" in v for v in found), found


def test_no_layering_violations():
  found = [v for path in _sources() for v in violations(path)]
  assert not found, "layering violations:\n" + "\n".join(found)


def _driver_files() -> list[pathlib.Path]:
  return sorted(p for p in (ROOT / "experiments").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", _driver_files(), ids=lambda p: p.name)
def test_drivers_are_thin(path):
  lines = path.read_text().count("\n")
  assert lines <= MAX_DRIVER_LINES, f"{path.name} has {lines} lines (at most {MAX_DRIVER_LINES})"
  long = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      length = node.end_lineno - node.lineno + 1
      if length > MAX_FUNCTION_LINES:
        long.append(f"{node.name} ({length} lines)")
  assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
