"""The course's authoring command line; the format and the generator are ``course_utils.authoring``.

    python -m course_utils.exercises generate [PATH ...]  # rewrite notebooks/, setup cells, README
                                                          # map, course_utils/from_solutions/
    python -m course_utils.exercises check                # exit 1 if anything is out of date
    python -m course_utils.exercises execute [PATH ...]   # re-run solutions, saving their outputs
    python -m course_utils.exercises mark NOTEBOOK NAME ... --module MODULE
                                                          # export cells (see authoring.export)

The names other code imports from here (the format, the paths, the generator) are re-exported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from .authoring.course_map import (
    MAP_END,
    MAP_START,
    course_map,
    lesson_objectives,
    lesson_summary,
    readme_with_map,
)
from .authoring.execution import execute
from .authoring.exercise_format import (
    BEGIN_HIDDEN,
    BEGIN_SOLUTION,
    END_HIDDEN,
    END_SOLUTION,
    EXPORT_MARKER,
    STUB,
    Exercise,
    FormatError,
    dumps,
    exercises,
    generate_student,
    is_check,
    is_exercise,
    nbgrader_meta,
    setup_cell_index,
    with_current_setup_cell,
)
from .authoring.export import mark
from .authoring.generated import duplicated_exports, expected_files, out_of_date, write
from .paths import FROM_SOLUTIONS, NOTEBOOKS, README, ROOT, SOLUTIONS, lesson_paths

__all__ = [
    "BEGIN_HIDDEN",
    "BEGIN_SOLUTION",
    "END_HIDDEN",
    "END_SOLUTION",
    "EXPORT_MARKER",
    "FROM_SOLUTIONS",
    "MAP_END",
    "MAP_START",
    "NOTEBOOKS",
    "README",
    "ROOT",
    "SOLUTIONS",
    "STUB",
    "Exercise",
    "FormatError",
    "course_map",
    "dumps",
    "execute",
    "exercises",
    "expected_files",
    "generate_student",
    "is_check",
    "is_exercise",
    "lesson_objectives",
    "lesson_paths",
    "lesson_summary",
    "main",
    "mark",
    "nbgrader_meta",
    "out_of_date",
    "readme_with_map",
    "setup_cell_index",
    "with_current_setup_cell",
]


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _lessons(args: list[str]) -> list[Path]:
    return [Path(a).resolve() for a in args]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_utils.exercises", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command")
    for name in ("generate", "execute"):
        commands.add_parser(name).add_argument("paths", nargs="*", help="solution notebooks")
    commands.add_parser("check")
    marking = commands.add_parser("mark", help="export cells: first line '#| export MODULE'")
    marking.add_argument("notebook", type=Path)
    marking.add_argument("names", nargs="+", help="function/class names or grade_ids")
    marking.add_argument("--module", required=True, help="course_utils/from_solutions/MODULE.py")
    args = parser.parse_args(argv or ["check"])

    if args.command == "execute":
        for path in _lessons(args.paths) or lesson_paths():
            print(f"executing {_relative(path)}", flush=True)
            execute(path)
        return 0
    if args.command == "generate":
        for path in write(_lessons(args.paths)):
            print(f"{'wrote' if path.exists() else 'deleted'} {_relative(path)}")
        return 0
    if args.command == "mark":
        nb = nbformat.read(args.notebook, as_version=4)
        changed = mark(nb, args.names, args.module)
        if changed:
            args.notebook.write_text(dumps(nb))
        print(
            f"{args.notebook}: marked cells {changed or 'none (already marked)'}; "
            "run `make notebooks` next"
        )
        return 0
    stale = out_of_date()
    for path in stale:
        print(f"out of date: {_relative(path)}")
    if stale:
        print("Run `make notebooks` (python -m course_utils.exercises generate) and commit it.")
    copies = duplicated_exports()
    for copy in copies:
        print(f"second copy of exported code: {copy}; import it from the generated module instead")
    return 1 if stale or copies else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
