# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lensforge-installed

.PHONY: setup demo test bench clean browser serve-demo

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/lensforge classify train --data digits --model cnn --epochs 15 --batch-size 64 --lr 3e-3 \
		--out runs/demo --no-progress

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The web page's browser test drives Debian's Chromium (Playwright cannot download its own here).
# Installed when missing and we may (root with apt-get); otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ; } || \
		echo "chromium not installed: the browser test will be skipped"

# Serves the demo run (trained first if missing) at http://127.0.0.1:8000/
serve-demo: $(STAMP)
	@[ -f runs/demo/weights/best.pt ] || $(MAKE) demo
	$(BIN)/lensforge serve runs/demo

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
