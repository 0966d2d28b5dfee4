# The project's verbs. Every target creates the virtual environment it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
# SAM CLI pins boto3 and signs with awscrt: it lives in a virtual environment of its own so
# that the tests run with the same boto3 and signing as the project's users.
SAM_VENV ?= .venv-sam
SAM := $(SAM_VENV)/bin/sam

.PHONY: local test lint unit browser soak bench template build validate security sam-local deploy clean

$(STAMP): pyproject.toml layers/core/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## template: write template.yaml from template.yaml.j2 and the provider catalogue
## (layers/core/tokenvend_core/catalogue/providers.toml); the verbs below that read it do this first
template: $(STAMP)
	$(PY) -m tokenvend.catalogue_template

## local: run the whole stack on this machine (moto, the functions, the signed API, sandbox providers)
local: $(STAMP) template
	$(VENV)/bin/tokenvend local $(ARGS)

## test: lint, type-check and run every test
test: lint unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The README's awscurl line runs in the tests (tests/e2e/test_readme.py) with awscurl from a
# virtual environment of its own: it brings awscrt, which would change how botocore signs in
# .venv. Only the command is put on the tests' PATH.
TOOLS_VENV ?= .venv-tools
TOOLS_BIN := .tools/bin
AWSCURL := $(TOOLS_BIN)/awscurl

$(AWSCURL):
	python3 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet "awscurl>=0.33,<1"
	mkdir -p $(TOOLS_BIN)
	ln -sf $(CURDIR)/$(TOOLS_VENV)/bin/awscurl $(AWSCURL)

## browser: the OS's headless Chromium and its chromium-driver, for the browser tests
## (tests/e2e/test_link_browser.py). Installed with apt-get when missing and this runs as root
## (or with password-less sudo); otherwise, or when the install fails, nothing fails here:
## the browser tests skip and say why.
BROWSER_LOG ?= /tmp/tokenvend-chromium-apt.log

browser:
	@if command -v chromedriver >/dev/null 2>&1 && \
	  { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then \
	  :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "browser: no chromium and no apt-get: the browser tests will skip"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then root=""; \
	  elif sudo -n true >/dev/null 2>&1; then root="sudo -n"; \
	  else echo "browser: no chromium, and not root: the browser tests will skip"; exit 0; fi; \
	  echo "browser: installing chromium and chromium-driver from the OS's packages"; \
	  if { $$root env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	       $$root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	         --no-install-recommends chromium chromium-driver; } >$(BROWSER_LOG) 2>&1; then :; \
	  else tail -5 $(BROWSER_LOG); \
	    echo "browser: chromium could not be installed: the browser tests will skip"; fi; \
	fi

unit: $(STAMP) $(AWSCURL) browser
	PATH="$(CURDIR)/$(TOOLS_BIN):$$PATH" $(VENV)/bin/pytest $(PYTEST_ARGS)

## soak: the model-based suite's state machines (tests/model) with random seeds and many more,
## longer sequences: about TOKENVEND_SOAK_SECONDS (600) plus the shrinking of what fails
soak: $(STAMP)
	TOKENVEND_SOAK=1 $(VENV)/bin/pytest tests/model/test_machine.py -q -p no:cacheprovider -o timeout=2400 $(PYTEST_ARGS)

## bench: print performance figures (not part of test), draw them in bench/results.png
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m bench

$(SAM):
	python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet "aws-sam-cli>=1.120,<2"

## validate / build: what CI checks besides the tests
validate: $(SAM) template
	$(SAM) validate --lint --region us-east-1

build: $(SAM) template
	$(SAM) build

## sam-local: the template's functions in SAM CLI's own emulation against tokenvend local
## (needs root for the Docker engine, or a running one; see README)
sam-local: $(STAMP) $(SAM)
	$(PY) sam/sam_local.py --sam $(SAM) $(ARGS)

## security: static checks of the template (checkov, offline) and the code (bandit)
CHECKS_VENV ?= .venv-checks
CHECKOV := $(CHECKS_VENV)/bin/checkov

$(CHECKOV):
	python3 -m venv $(CHECKS_VENV)
	$(CHECKS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKS_VENV)/bin/python -m pip install --quiet "checkov>=3,<4"

security: $(STAMP) $(CHECKOV) template
	$(VENV)/bin/bandit -q -c pyproject.toml -r layers functions src
	BC_SKIP_MAPPING=TRUE $(CHECKOV) --skip-download --config-file .checkov.yaml -f template.yaml --compact --quiet

## deploy: first time `make deploy ARGS=--guided`
deploy: build
	$(SAM) deploy $(ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKS_VENV) $(TOOLS_VENV) .tools .aws-sam .mypy_cache .pytest_cache .ruff_cache
