# The course's two commands: `make course` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Prints how long each stage took, so the closing notes can report the time budget.
STAGE   = @echo "== $(1) ..."; start=$$(date +%s); $(2); rc=$$?; \
          echo "== $(1): $$(( $$(date +%s) - start )) s"; exit $$rc

.PHONY: install course test unit notebooks lint bench lab clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(call STAGE,install,test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install -q --upgrade pip && \
	  $(BIN)/python -m pip install -q -c constraints.txt -e ".[all]")
	@touch $(STAMP)

# Train or load the tiny models once, then execute every notebook into build/.
course: install
	$(call STAGE,zoo prepare,$(BIN)/mmlib zoo prepare)
	$(call STAGE,course,$(BIN)/mmlib course --out build)

# Everything CI checks. One MMLIB_HOME per run, filled first by `mmlib zoo prepare`.
test: export MMLIB_HOME ?= $(CURDIR)/build/mmlib_home
test: export HF_HUB_OFFLINE = 1
test: export MMLIB_PROFILE = tiny
test: install
	$(call STAGE,lint,$(BIN)/ruff check . && $(BIN)/ruff format --check .)
	$(call STAGE,zoo prepare,$(BIN)/mmlib zoo prepare)
	$(call STAGE,unit tests,$(BIN)/pytest -q -m "not notebook" --durations=10)
	$(call STAGE,notebooks,$(BIN)/pytest -q -m notebook -s)
	$(call STAGE,benches (quick),$(BIN)/mmlib bench all --quick)

lab: install
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build .pytest_cache .ruff_cache
