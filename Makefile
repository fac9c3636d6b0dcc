# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit lint setup kafka-jars test-packages helm clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) kafka-jars

# The browser test drives Debian's Chromium; the retention test checks bitmapist on a real Redis.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-packages:
	@command -v chromium >/dev/null && command -v redis-server >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium redis-server >/dev/null; }

# The chart's tests render it with Helm at a pinned version, built once with Go into the cache.
HELM_VERSION := v4.3.2
HELM := $(HOME)/.cache/cardflow/helm-$(HELM_VERSION)/helm
helm: $(HELM)
$(HELM):
	GOBIN=$(dir $(HELM)) go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

kafka-jars: $(STAMP)
	$(BIN)/cardflow kafka fetch

run: setup
	$(BIN)/cardflow dev

test: setup test-packages helm lint
	$(BIN)/python -m pytest -q

test-unit: $(STAMP) helm
	$(BIN)/python -m pytest -q -m unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy cardflow agents topologies connectors bench

# The dashboard's chart library, from npm at a pinned version, bundled into the package (no CDN).
CHARTJS := 4.5.1
vendor-chartjs:
	cd $$(mktemp -d) && npm pack chart.js@$(CHARTJS) >/dev/null && tar xzf chart.js-$(CHARTJS).tgz && \
	  cp package/dist/chart.umd.min.js $(CURDIR)/cardflow/api/static/ && \
	  cp package/LICENSE.md $(CURDIR)/cardflow/api/static/chart.js.LICENSE.md

clean:
	rm -rf $(VENV) build *.egg-info
