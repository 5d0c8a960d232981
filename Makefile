# Two commands do all set-up on a fresh machine (Python 3.10+ with venv and pip):
#   make demo   create .venv, install, run the container's entry point on the bundled sample
#   make test   create .venv, install, run the test suite (slow suites: make test-all)
#   make lint   ruff's linter and formatter, as checks (CI runs both before the tests)
#   make container-test   build the image with podman (a stand-in base where Docker Hub is out of
#                         reach) and run it as grand-challenge does; root, about 30 minutes
# The venv takes the CPU build of torch 2.13 (constraints-cpu.txt); the container uses the CUDA
# build of the same version (requirements.txt, Dockerfile).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE ?= test/samples/t1-phantom/input
OUTPUT ?= output

.PHONY: demo test test-all lint container-test setup system-packages clean

$(BIN)/.installed: requirements-cpu.txt requirements-extras.txt constraints-cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -r requirements-cpu.txt -r requirements-extras.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python inference.py --input $(SAMPLE) --output $(OUTPUT) --device auto

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The DICOM node's tests talk to a real PACS and real DICOM tools (Debian's orthanc, its DICOMweb plugin and
# dcmtk); without them those tests are skipped with a reason. Needs root and Debian's apt.
system-packages:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb dcmtk

test-all: setup
	$(BIN)/python -m pytest -q --runslow

container-test: setup
	PYTHON=$(CURDIR)/$(BIN)/python bash test/container/run.sh

clean:
	rm -rf $(VENV) $(OUTPUT) .pytest_cache
