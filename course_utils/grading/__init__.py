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

Threat model (what a submission can and cannot do):

* Defended: fake "passed" prints, edited or deleted check cells, monkeypatching ``course_utils.checks``
  / ``torch.testing`` / ``RESULTS`` in the kernel, objects whose ``__eq__`` is always true, tensor
  subclasses, forged record files (they only claim outputs, which the grader checks against its own
  truth for its own inputs), infinite loops (interrupt, then kill), ignoring SIGINT, crashes, memory
  bombs (``RLIMIT_AS``), huge outputs (counted, never stored). As root on Linux also: reading the
  solutions, tests or git history (hidden by tmpfs), writing course files, deleting inputs or results,
  signalling the grader or another submission's kernel (own uid per submission), network access.
* Not defended: without root there are no namespaces or uid switch, so a kernel runs as the grader's
  user and can read the solutions and write files (the batch then reports whether the trusted files
  changed); a graded cell whose check observes effects a record cannot carry (hooks left on the model,
  method calls on a spy object) is graded by the kernel's own verdict, marked ``trust: kernel`` in
  the JSON, and that verdict can be forged; disk filling in ``/tmp`` beyond ``RLIMIT_FSIZE`` per file;
  CPU use within the timeouts; a learner computing correct outputs with the course's own helpers
  (``course_utils.predictions``), which is a question of honesty, not of the grader's integrity.

Importing the package runs nothing (the sandbox launcher imports its submodule in a bare process);
the entry points are in ``course_utils.grading.batch``.
"""
