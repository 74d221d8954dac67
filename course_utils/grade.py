"""Grade a folder of submissions of one lesson.

    python -m course_utils.grade LESSON SUBMISSIONS --out results/

Writes ``results/LESSON.csv`` (one row per input file: a column per graded cell, total,
max_points, error) and ``results/LESSON.json`` (per-cell messages). The machinery lives in
``course_utils.grading``.
"""

import sys

from .grading.batch import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
