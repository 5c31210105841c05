# Two commands do all set-up on a fresh machine:
#   make serve   venv, install, pack the bundled example models, serve them
#   make test    venv, install with every extra (and Debian's chromium), run every test
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
HTTP_PORT ?= 8080
GRPC_PORT ?= 8081

.PHONY: serve test install install-all examples clean browser

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(VENV)/bin/activate
	$(PIP) install -q -e .

install-all: $(VENV)/bin/activate
	$(PIP) install -q -e '.[all,dev]'

examples: install
	$(PY) examples/build_examples.py examples/build

serve: examples
	@echo "Once ready, try (one line per protocol):"
	@echo "  curl -s localhost:$(HTTP_PORT)/v2/models/addition/infer -d '{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1,2]},{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[3,4]}]}'"
	@echo "  curl -s localhost:$(HTTP_PORT)/v1/models/addition:predict -d '{\"inputs\":{\"x\":[1,2],\"y\":[3,4]}}'"
	@echo "  curl -s -X POST localhost:$(HTTP_PORT)/api/predict/addition"
	@echo "  $(VENV)/bin/modelpod infer http://localhost:$(HTTP_PORT) addition -i 'x=[1,2]' -i 'y=[3,4]'"
	$(VENV)/bin/modelpod serve examples/build/repository --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT)

# the dashboard tests drive a real headless browser: Debian's chromium
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the dashboard's browser tests"; \
	  $$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo) apt-get update -qq && \
	  $$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo) apt-get install -y -qq chromium >/dev/null; }

test: install-all browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) examples/build .pytest_cache
