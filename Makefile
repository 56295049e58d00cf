# The course's commands. A newcomer needs two of them:
#   make lab    set everything up and open the course in JupyterLab
#   make test   set everything up and run the whole test suite
# Both create their own virtual environment (.venv) and are safe to run again.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is installed first, by tools/setup_env.py: the CPU build (PyTorch's CPU index) unless
# nvidia-smi finds a GPU, and a torch that already works is kept. constraints.txt pins it in
# every pip call, so no later package can replace it with several GB of CUDA wheels.
PIPC   := $(PIP) install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.sclecture-installed

# OpenMP's busy-waiting threads slow torch down 10x on a busy 2-core machine.
export OMP_WAIT_POLICY := PASSIVE
# tools that nbgrader and jupyter call by name come from the course's environment
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Grade, test and execute on the CPU threads we have; a student's laptop chooses itself.
PYTEST_ARGS ?=

.PHONY: help setup lab test test-notebooks test-notebooks-matrix notebooks execute releases benchmarks grade book clean-venv

help:
	@echo "make lab         set up and open the course in JupyterLab"
	@echo "make test        set up and run every test (unit, notebooks, releases, grading)"
	@echo "make test-notebooks [LESSONS=03_actinn]   only the notebook checks (nbval on solutions/)"
	@echo "make test-notebooks-matrix                the notebook checks once per machine variation (threads, CPU code paths)"
	@echo "make notebooks   maintainers: rebuild solutions/ from lessons/, execute them, regenerate notebooks/"
	@echo "make execute     maintainers: re-execute solutions/ in place (fresh stored outputs)"
	@echo "make releases    maintainers: regenerate notebooks/ from solutions/ (nbgrader generate_assignment)"
	@echo "make grade LESSON=01_logistic_regression SUBMISSIONS=path/to/folder-or.zip   instructors: grade a class"
	@echo "make benchmarks  run benchmarks/ and write benchmarks/results/"
	@echo "make book [LESSONS=01_logistic_regression]   the course as a static website: book/_build/html/index.html"

$(STAMP): pyproject.toml constraints.txt tools/setup_env.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "sclecture needs Python 3.11 or newer; found " + sys.version.split()[0] + ". Run: make PYTHON=python3.11 ...")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) tools/setup_env.py torch $(PIPC)
	$(PIPC) -e ".[course,test]"
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=. notebooks/00_setup/00_setup.ipynb

test: setup
	$(PY) tools/run_tests.py $(PYTEST_ARGS)

test-notebooks: setup
	$(PY) tools/run_tests.py --notebooks $(LESSONS) $(PYTEST_ARGS)

test-notebooks-matrix: setup
	$(PY) tools/run_tests.py --matrix $(LESSONS)

notebooks: setup
	$(PY) tools/notebooks.py build $(LESSONS)
	$(PY) tools/notebooks.py execute $(LESSONS)
	$(PY) tools/notebooks.py release $(LESSONS)

execute: setup
	$(PY) tools/notebooks.py execute $(LESSONS)

releases: setup
	$(PY) tools/notebooks.py release $(LESSONS)

grade: setup
	$(PY) tools/grade.py $(LESSON) $(SUBMISSIONS)

benchmarks: setup
	$(PY) benchmarks/run_all.py

# Jupyter Book 1.x and its Sphinx extensions (the `book` extra); MathJax comes from npm at build time
BOOK_STAMP := $(VENV)/.sclecture-book-installed
$(BOOK_STAMP): $(STAMP)
	$(PIPC) -e ".[course,test,book]"
	$(PY) -m pip check
	touch $(BOOK_STAMP)

book: setup $(BOOK_STAMP)
	$(PY) tools/build_book.py $(if $(LESSONS),--lessons $(LESSONS))

clean-venv:
	rm -rf $(VENV)
