"""The library's shape: every function has a user, no two functions share a name, docstrings say what a module holds."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = sorted((ROOT / "lib" / "vqtto").rglob("*.py"))

# Public API kept for users even where no page or module calls it yet.
API = {"defaults", "bootstrap_interval", "final_losses", "setup", "log_prob_categorical"}


def _defs(path):
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def test_every_function_and_class_is_used_by_the_library_or_the_book():
    corpus = "\n".join(p.read_text() for p in [*LIB, *(ROOT / "book").glob("*.ipynb")])
    unused = []
    for path in LIB:
        for node in _defs(path):
            if node.name.startswith("__") or node.name in API:
                continue
            if len(re.findall(rf"\b{re.escape(node.name)}\b", corpus)) <= 1:
                unused.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not unused, f"defined but never used outside tests: {unused}"


def test_no_two_module_level_functions_share_a_name():
    seen = {}
    clashes = []
    for path in LIB:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.name != "main":
                if node.name in seen:
                    clashes.append(f"{node.name}: {seen[node.name]} and {path.relative_to(ROOT)}")
                seen[node.name] = str(path.relative_to(ROOT))
    assert not clashes, clashes


def test_every_module_says_what_it_holds():
    missing = [str(p.relative_to(ROOT)) for p in LIB if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"
