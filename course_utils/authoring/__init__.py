"""Authoring tools: the exercise format, the generated files and notebook execution.

One module per concept:

* ``exercise_format``: the nbgrader-compatible format of a solution notebook and the student
  notebook generated from it;
* ``export``: cells marked ``#| export MODULE`` become ``course_utils/from_solutions/MODULE.py``;
* ``course_map``: the README's table of lessons and their objectives;
* ``generated``: every generated file and the drift check;
* ``execution``: re-running a solution notebook to refresh its outputs.

The command line is ``python -m course_utils.exercises generate|check|execute|mark``.
"""
