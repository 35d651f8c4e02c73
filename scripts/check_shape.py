"""`make lint`, size and shape: no module over 300 lines, no function over 40 lines (issue 8, item 7).

Checks every Python file git tracks (migrations aside: Django writes them),
prints one line per problem, and exits with status 1 when there is any:

    MODULE delivery/example.py: 312 lines (at most 300)
    FUNC delivery/example.py:40 send_everything: 52 lines (at most 40)

A module's length is its number of lines; a function's runs from its `def`
(decorators not counted) to its last line, nested functions and methods
included. Run it from anywhere: `python scripts/check_shape.py [ROOT]`
(ROOT: the repository, by default the one holding this script).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 40
ROOT = Path(__file__).resolve().parent.parent


def tracked_python_files(root: Path) -> list[str]:
    """The repository's tracked .py files, relative to `root`, migrations left out."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.py"], cwd=root, capture_output=True, text=True, check=True
    )
    return [path for path in listing.stdout.split("\0") if path and "/migrations/" not in f"/{path}"]


def problems_in(path: str, source: str) -> Iterator[str]:
    """One line per module or function of `source` over its limit."""
    lines = source.count("\n")
    if lines > MAX_MODULE_LINES:
        yield f"MODULE {path}: {lines} lines (at most {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield f"FUNC {path}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})"


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else ROOT
    problems = [
        problem
        for path in tracked_python_files(root)
        if (root / path).is_file()  # deleted in the work tree, not yet in the index
        for problem in problems_in(path, (root / path).read_text(encoding="utf-8"))
    ]
    print("\n".join(problems) if problems else "size and shape: every module and function within limits")
    if problems:
        print(f"{len(problems)} problem(s): split by responsibility, see issue 8 item 7", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
