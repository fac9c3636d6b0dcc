# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: vendor-geo run test test-unit lint setup kafka-jars test-packages helm clean

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

# The Map widget's choropleth: chartjs-chart-geo (its UMD build carries topojson-client), the
# world-atlas 110m countries, and ISO 3166 alpha-2 → numeric codes (world-atlas's ids), from npm.
GEO := 4.3.6
ATLAS := 2.0.2
ISO := 7.14.0
vendor-geo:
	cd $$(mktemp -d) && npm pack chartjs-chart-geo@$(GEO) world-atlas@$(ATLAS) i18n-iso-countries@$(ISO) >/dev/null && \
	  for f in *.tgz; do mkdir -p $${f%.tgz} && tar xzf $$f -C $${f%.tgz}; done && \
	  cp chartjs-chart-geo-$(GEO)/package/build/index.umd.min.js $(CURDIR)/cardflow/api/static/chartjs-chart-geo.umd.min.js && \
	  cp chartjs-chart-geo-$(GEO)/package/LICENSE $(CURDIR)/cardflow/api/static/chartjs-chart-geo.LICENSE && \
	  cp world-atlas-$(ATLAS)/package/countries-110m.json $(CURDIR)/cardflow/api/static/ && \
	  cp world-atlas-$(ATLAS)/package/LICENSE $(CURDIR)/cardflow/api/static/world-atlas.LICENSE && \
	  cp i18n-iso-countries-$(ISO)/package/LICENSE $(CURDIR)/cardflow/api/static/i18n-iso-countries.LICENSE && \
	  python3 -c "import json,sys; print(json.dumps({a: n for a, _, n, *_ in json.load(open(sys.argv[1]))}, sort_keys=True))" \
	    i18n-iso-countries-$(ISO)/package/codes.json > $(CURDIR)/cardflow/api/static/iso-numeric.json

clean:
	rm -rf $(VENV) build *.egg-info
