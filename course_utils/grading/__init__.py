"""Automatic grading of many submissions, safely (``python -m course_utils.grade``).

How a submission is graded, and why the result can be trusted:

* ``lesson``: the graded cells and their hidden tests come from the trusted solution notebook,
  matched by nbgrader ``grade_id``; the student's copies are never run. Each trusted check runs at
  the place of the student's check cell (as in nbgrader); a deleted one runs just before the next
  graded cell the notebook still has, or at the end; the row's notes say what was deleted, edited or
  repeated.
* ``kernel`` + ``sandbox``: every submission runs in its own fresh kernel, cell by cell, with a
  timeout per cell, a memory cap (``RLIMIT_AS`` per process, and a memory cgroup for the whole
  process tree where one can be made) and its own stdout/stderr file; as root on Linux, a root file
  system made of an allow-list (system, Python, the virtual environment, ``course_utils`` alone, the
  model cache, its scratch folder), no network, and a uid reserved for it (``batch.UidPool``).
* ``capture`` (inside the kernel): around each graded cell, records what the learner's functions
  returned for the inputs the check gave them, the calls they made to functions and spy objects the
  check passed in, in-place edits, the steps of a context manager they returned (entered; left,
  with which exception, and what it did with it) and, after each call and step, the state of the
  check's spies that describe one (02.9: which of the check's hooks are attached where on the
  model); ``codec`` carries those values as plain data (numpy scalars and arrays normalised;
  functions, context managers, and the learner's own classes and callable objects, recorded; a
  library's other callable objects sent by type).
* ``judge`` (the grader's process): re-runs each trusted graded cell on the solution's own state
  with the learner's functions replaced by replays of the recorded outputs and steps (its own spies
  and model put in the recorded states); its own checks decide.
  Hidden tests draw their inputs (prompts, facts, layers, positions, heads, numbers, seeds) from a
  seed made for the batch (``checks.hidden_rng``), given to kernel and judge alike; in a notebook
  they keep the fixed inputs written in ``course_utils/checks``.
* ``batch``: process pool, one row per input file, written as soon as it is graded (CSV + JSON
  lines), then the CSV in file order and the JSON.

Threat model. Defended, with the test that shows it (tests/test_grade.py
``test_hostile_and_honest_batch`` is "batch"; the others are tests/test_grading_*.py):

* Honest work scores: answers in new cells below the stub, scratch copies, helper cells, moved or
  deleted check cells (``test_grading_lesson``; batch ``honest_scratch_and_helpers``,
  ``honest_no_check_cells``); numpy results, callable objects, factories written as classes
  (``test_grading_judge`` ``test_numpy_*``, ``test_a_factory_*``; batch
  ``honest_numpy_and_callable_object``).
* Forged verdicts: fake "passed" prints, edited or deleted check cells, monkeypatching
  ``course_utils.checks`` / ``torch.testing`` / ``RESULTS`` in the kernel, objects whose ``__eq__``
  is always true, tensor subclasses, forged records (they only claim outputs, which the grader
  checks against its own truth for its own inputs) (batch). No point is decided by the kernel's
  verdict: calls on a check's spy object are recorded and repeated on the grader's spy
  (``test_resid_post_stack_is_replayed_with_the_spy_calls``), and ``02.9 temporary_hooks`` is
  replayed from the hooks its context manager left on the model after each step, so a printed pass,
  a swallowed failure with ``RESULTS`` rewritten, a replaced check or a patched ``expect`` all score
  0 while honest ``@contextmanager``, class-based and ``model.hooks`` versions score
  (``test_a_forged_temporary_hooks_verdict_scores_zero``, ``test_honest_temporary_hooks_score``,
  ``test_wrong_temporary_hooks_score_zero``). Before grading, the grader replays the solution's own
  records of every graded cell and refuses a lesson in which one fails, naming the cell, rather than
  trust a kernel (``test_every_lesson02_graded_cell_is_replayed``,
  ``test_a_lesson_with_a_cell_the_records_cannot_carry_is_refused``; every graded cell of lessons
  00-07 passes).
* Reading the truth: learner code runs before the check computes its expected values
  (``test_learner_code_cannot_read_the_truth_from_the_call_stack``,
  ``test_a_hook_cannot_read_the_truth_from_the_call_stack``); a table of answers for the fixed
  hidden inputs fails, as the grading inputs of every hidden test (lessons 00 to 07) are drawn from
  the batch's seed, and a kernel that changes the seed only loses (``test_a_lookup_table_*`` here
  and in each lesson's tests/test_<module>.py, ``test_a_kernel_that_changes_the_seed_only_loses``).
* The grader's process: records are read from a folder descriptor opened before the kernel started,
  with ``O_NOFOLLOW | O_NONBLOCK``, regular files only, sizes checked on the descriptor (links,
  FIFOs, swapped folders: ``test_records_*``, ``test_a_fifo_*``, ``test_a_record_folder_*``; batch
  ``record_symlink``, ``record_fifo``); replay is bounded in calls, callbacks and decoded bytes per
  cell and per submission (``test_replay_is_bounded_*``; batch ``record_callback_flood``); every
  judge step has a timeout (``test_every_judge_step_has_a_timeout``); a kernel's raw writes to fd
  1/2 go to its own file (``test_grading_sandbox``; batch ``raw_fd_write``); input files are opened
  the same way (links, pipes: ``test_inputs_that_are_not_regular_files_*``; batch ``pipe.ipynb``,
  ``link.ipynb``).
* Resources: infinite loops (interrupt, then kill), ignoring SIGINT, crashes, memory bombs, huge
  outputs (counted, never stored) (batch); several processes together over the cap (the cgroup,
  ``test_grading_sandbox``).
* Other batches and processes: uids are reserved with a lock per uid and only when no process of
  that uid exists, so a kill reaches only this batch's kernel
  (``test_concurrent_batches_get_different_uids``,
  ``test_a_uid_with_someone_elses_process_is_never_taken``); the kill also empties the kernel's
  cgroup.
* Results: every input gets a row, names that are not UTF-8 are escaped, cells starting with
  ``= + - @``, tab or CR are prefixed with ``'`` (CSV injection), rows are on disk as soon as graded
  (``test_grading_batch``; batch).
* As root on Linux also: reading the solutions, tests, git history or any other copy of the course
  on the machine (not in the allow-list: ``test_grading_sandbox``; batch ``find_other_copy``,
  ``read_answer_keys``), writing course files, deleting inputs or results (batch ``delete_files``),
  signalling the grader or another kernel (own uid), network access.
* Students never receive the notebooks' answers: ``make release`` bundles no solutions, hidden
  tests, plain quiz specs, tests or grader (tests/test_release.py). Not the exercises whose
  functions later lessons import, though: those ship as ``course_utils/from_solutions/`` (see "Not
  defended").

Not defended: without root there are no namespaces, allow-list, cgroup or uid switch, so a kernel
runs as the grader's user and can read the solutions and write files (the batch then reports whether
the trusted files changed); a spy's recorded method calls (02.5: "called run_with_cache with a names
filter") and recorded states (02.9: "the hook was attached on entering and gone after leaving") are
the kernel's claim, though 02.5's tensor is checked and 02.9's hooks must be the check's own
functions at hook points of the grader's model; 02.9 replays only the hook functions the check
passed in (a learner's wrapper around one scores 0, with a message saying so:
``test_a_hook_other_than_the_given_one_is_not_replayed``); hidden tests that need the model to know
a fact (lessons 03, 04, 06 and 07's patching) draw it from the course's public list of known facts
(``course_utils.facts``, 76), so a table covering every fact is conceivable, though the positions,
layers, heads and seeds drawn with it are not; disk filling in the scratch folder beyond
``RLIMIT_FSIZE`` per file; CPU use within the timeouts; a learner computing correct outputs with the
course's own helpers (``course_utils.predictions``, the exported lesson functions in
``course_utils.residual_stream`` and ``course_utils.hooks``), which is a question of honesty, not of
the grader's integrity; for the same reason the release holds the reference text of every exercise
a later lesson imports (``course_utils/from_solutions/``: lessons 00, 01, 02, 05 and 07's exported
cells), readable by a student who opens the package.

Importing the package runs nothing (the sandbox launcher imports its submodule in a bare process);
the entry points are in ``course_utils.grading.batch``.
"""
