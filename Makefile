# `make demo`: set up .venv, then segment the bundled examples with the default model.
# `make test`: set up .venv with the dev extras, then run the whole test suite (as CI does).
# `make check`: the fast subset for the edit loop (no slow, data or e2e tests).
# `make check-pythons`: the wheel installed with its extras in a clean venv per Python 3.10-3.13, run from outside.
# `make docs`: render the generated pages, then build the documentation site into site/ (DOCS_OUT=dir elsewhere).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.attnseg-installed

.PHONY: setup demo test check check-pythons e2e chromium docs clean
DOCS_OUT ?= site

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: here it is a local CPU build; unpinned, pip may pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/attnseg predict examples/ --out demo_out
	@echo "outputs in demo_out/ (NAME.png label maps with a palette, NAME_overlay.jpg blends)"

# the browser test drives Debian's Chromium through Playwright (Playwright's own browser download is unreachable)
chromium:
	@command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)

test: setup chromium
	$(BIN)/python -m pytest -q

# the edit loop: everything but the slow, data and browser/server tests (a couple of minutes on 2 cores)
check: setup
	$(BIN)/python -m pytest -q -m "not slow and not data and not e2e"

# every supported Python: a clean venv each with the wheel and its extras; predict, serve and the HF client from
# outside the repository (downloads torch for each Python; see scripts/check_pythons.sh)
check-pythons:
	bash scripts/check_pythons.sh

docs: setup
	$(BIN)/python scripts/render_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict -d $(DOCS_OUT)
	@echo "documentation in $(DOCS_OUT)/index.html"

e2e: setup chromium
	$(BIN)/python -m pytest -q -m e2e

clean:
	rm -rf $(VENV) demo_out outputs
