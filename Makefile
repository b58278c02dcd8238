# Two everyday commands on a fresh machine: `make demo` and `make test`.
# Each creates the virtualenv from the pinned requirements when it is missing or out of date.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py package.xml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The shipped model over ROS 2 (sim bridge + mhc_controller as processes, ONNX Runtime on CPU), one episode
# per task on evaluation seeds; writes a bag of the run and a GIF with the predicted motion drawn.
DEMO_OUT ?= out
demo: venv
	rm -rf $(DEMO_OUT)/demo_bag
	$(BIN)/mhc bringup sim --policy mhc --checkpoint model/checkpoints/mhc_s.safetensors --backend onnxruntime \
	  --task reach,pick_place,push,intercept --episodes 4 --seed 1000000 --allow-failures \
	  --bag $(DEMO_OUT)/demo_bag --video $(DEMO_OUT)/demo.gif

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
