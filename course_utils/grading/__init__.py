"""Automatic grading of many submissions, safely (``python -m course_utils.grade``).

How a submission is graded, and why the result can be trusted:

* ``lesson``: the graded cells and their hidden tests come from the trusted solution notebook,
  matched by nbgrader ``grade_id``; the student's copies are never run, missing ones are added.
* ``kernel`` + ``sandbox``: every submission runs in its own fresh kernel, cell by cell, with a
  timeout per cell, a memory cap (``RLIMIT_AS``) and, as root on Linux, its own uid and mount/network
  namespaces that hide the solutions and tests.
* ``capture`` (inside the kernel): around each graded cell, records what the learner's functions
  returned for the inputs the check gave them; ``codec`` carries those values as plain data.
* ``judge`` (the grader's process): re-runs each trusted graded cell on the solution's own state with
  the learner's functions replaced by replays of the recorded outputs; its own checks decide.
* ``batch``: process pool, one row per input file, CSV + JSON.

Importing the package runs nothing (the sandbox launcher imports its submodule in a bare process);
the entry points are in ``course_utils.grading.batch``.
"""
