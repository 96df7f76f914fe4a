# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lensforge-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/lensforge classify train --data digits --model cnn --epochs 15 --batch-size 64 --lr 3e-3 \
		--out runs/demo --no-progress

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
