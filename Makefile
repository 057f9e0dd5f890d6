# make book   create .venv, get the data, execute every chapter (PROFILE=quick), build _build/html
# make test   create .venv, get the data and chromium, run the test suite:
#             library unit tests, every chapter with the smoke profile, browser tests of the site
PROFILE ?= quick
# JOBS: chapters at once (unset: 2 for smoke and quick on a CPU with 2+ cores, else 1)
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
DATA    := data/FashionMNIST/raw/t10k-labels-idx1-ubyte

.PHONY: book run site test data browser env bench clean
book: run site

env: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[book,test]"
	touch $(STAMP)

data: $(DATA)
$(DATA): | $(STAMP)
	PY=$(PY) bash scripts/get-data.sh

browser:
	bash scripts/get-browser.sh

run: $(STAMP) $(DATA)
	$(PY) -m vqtto.book run --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS))

site: $(STAMP)
	$(PY) -m vqtto.book build

test: $(STAMP) $(DATA) browser
	$(PY) -m pytest -q

clean:
	rm -rf _build
