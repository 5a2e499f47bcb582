# rtc-testbed. Run as root on Debian: `make run` (set up + main job), `make test` (set up + tests).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 nftables iperf3 iputils-ping tcpdump ethtool kmod procps user-mode-linux \
	tesseract-ocr tesseract-ocr-eng chromium gcc libc6-dev python3-dev
# container hosts (docs/docker.md); not inside the testbed's own image (no Docker in Docker)
APT_PACKAGES += $(if $(RTC_TESTBED_IN_IMAGE),,docker.io debootstrap)
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done

.PHONY: setup run test drill test-unit lint bench clean-kernel help dockerd image test-image rmcat

help:
	@echo "make setup   apt packages + .venv with pinned Python dependencies"
	@echo "make run     setup, then the main job: a small Figure 3 sweep and its plot"
	@echo "make test    setup, then all tests (root: real namespaces, links, processes)"
	@echo "make drill   setup, then the on-demand drills: the whole fault matrix, a soak"
	@echo "make lint    ruff + mypy --strict on testbed/"
	@echo "make bench   the link fidelity and frame-latency floor benchmarks"
	@echo "make rmcat   the RMCAT suite (RFC 8867), every case x controller, its report and figures;"
	@echo "             ONLY='--only stream.stack=aiortc --only stream.abr=remb' for one controller"
	@echo "make dockerd start the testbed's own Docker daemon (unless one answers)"
	@echo "make image   build rtc-testbed/testbed:latest with no registry (docs/docker.md)"
	@echo "make test-image  build it and run the quick sweep inside (on demand, ~15 min)"

setup: $(STAMP_APT) $(STAMP_PIP)

$(STAMP_APT): Makefile
	@command -v apt-get >/dev/null || { echo "make setup needs Debian's apt-get"; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null
	mkdir -p $(VENV) && touch $@

$(STAMP_PIP): pyproject.toml testbed/shaping/_emucore.c testbed/shaping/_emuqueue.c
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: setup
	$(VENV)/bin/testbed doctor
	$(VENV)/bin/testbed run experiments/quick.yaml -o results/quick
	$(VENV)/bin/testbed report results/quick
	$(VENV)/bin/testbed plot results/quick -o results/quick-fig3.pdf

bench: setup
	$(VENV)/bin/testbed bench link
	$(VENV)/bin/testbed bench link --load
	$(VENV)/bin/testbed bench floor
	$(VENV)/bin/testbed bench sweep

RMCAT_OUT ?= results/rmcat
rmcat: setup
	for f in experiments/rmcat/*.yaml; do \
	  $(VENV)/bin/testbed run $$f -o $(RMCAT_OUT)/$$(basename $$f .yaml) $(ONLY) || exit $$?; done
	$(VENV)/bin/testbed report $(RMCAT_OUT) --rmcat --csv $(RMCAT_OUT)-metrics.csv
	$(VENV)/bin/testbed plot $(RMCAT_OUT) --rmcat

test: setup
	$(VENV)/bin/pytest -q

drill: setup
	$(VENV)/bin/pytest -q -m drill

test-unit: setup
	$(VENV)/bin/pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check testbed tests
	$(VENV)/bin/ruff format --check testbed tests
	$(VENV)/bin/mypy

dockerd: setup
	$(VENV)/bin/testbed docker start

image: dockerd
	$(VENV)/bin/testbed docker image --kind testbed

test-image: setup
	$(VENV)/bin/pytest -q -m image

clean-kernel: setup
	$(VENV)/bin/testbed clean
