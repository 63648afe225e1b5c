# The course's two commands: `make course` and `make test`. Both create .venv first.
# (Windows has no make: the README lists the same steps as plain commands.)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PACK   := build/mmlib-tiny.zip
# Prints how long each stage took, so the closing notes can report the time budget.
STAGE   = @echo "== $(1) ..."; start=$$(date +%s); $(2); rc=$$?; \
          echo "== $(1): $$(( $$(date +%s) - start )) s"; exit $$rc

.PHONY: install course test site lab clean disk

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(call STAGE,install,test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install -q --upgrade pip && \
	  $(BIN)/python -m pip install -q -c constraints.txt -e ".[all]")
	@touch $(STAMP)

# Room on the disk for make test (the venvs, the zoo, the tests' files), before an hour of work.
disk:
	@$(PYTHON) scripts/disk_check.py

# Train or load the tiny models once, then execute every notebook into build/.
course: install
	$(call STAGE,zoo prepare,$(BIN)/mmlib zoo prepare)
	$(call STAGE,course,$(BIN)/mmlib course --out build/executed)

# Everything CI checks. One MMLIB_HOME per run, filled first by `mmlib zoo prepare`; the
# notebooks then run in a second one that only imported the model pack, with training
# switched off, as a workshop laptop or a Colab VM would.
test: export MMLIB_HOME ?= $(CURDIR)/build/mmlib_home
test: export HF_HUB_OFFLINE = 1
test: export MMLIB_PROFILE = tiny
test: export MMLIB_REQUIRE_PREPARED = 1
test: disk install
	$(call STAGE,lint,$(BIN)/ruff check . && $(BIN)/ruff format --check .)
	$(call STAGE,zoo prepare,$(BIN)/mmlib zoo prepare)
	$(call STAGE,model pack,$(BIN)/mmlib zoo export $(PACK) && rm -rf build/imported_home && \
	  MMLIB_HOME=$(CURDIR)/build/imported_home $(BIN)/mmlib zoo import $(PACK))
	$(call STAGE,unit tests,$(BIN)/pytest -q -m "not notebook and not hostile and not fuzz" \
	  --durations=10)
	$(call STAGE,hostile inputs,$(BIN)/pytest -q -m hostile)
	$(call STAGE,fuzz,$(BIN)/pytest -q -m fuzz)
	$(call STAGE,unit tests under spawn,MMLIB_START_METHOD=spawn $(BIN)/pytest -q -m workers)
	$(call STAGE,notebooks,MMLIB_HOME=$(CURDIR)/build/imported_home MMLIB_NO_TRAINING=1 \
	  $(BIN)/pytest -q -m notebook -s)
	$(call STAGE,site,$(MAKE) --no-print-directory site)
	$(call STAGE,colab check,$(BIN)/python scripts/colab_check.py --unit)
	$(call STAGE,benches (quick),$(BIN)/mmlib bench all --quick)

# The course as a static website: the executed notebooks (figures included, as the notebook
# stage of `make test` or `make course` left them in build/executed) and the docs, rendered by
# Sphinx + MyST-NB into build/site; then every notebook page is checked for its figures and for
# error output. README.md, "Publishing the course", says how to put it online.
site: install
	rm -rf build/site-src build/site && mkdir -p build/site-src/notebooks
	cp README.md site/index.md build/site-src/ && cp -r docs build/site-src/docs
	cp build/executed/[0-9][0-9]_*.ipynb build/site-src/notebooks/
	$(BIN)/sphinx-build -c site -W -n --keep-going -q -b html build/site-src build/site
	$(BIN)/python scripts/check_site.py build/executed build/site

lab: install
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build .pytest_cache .ruff_cache
