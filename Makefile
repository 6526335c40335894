# The two commands that matter on a fresh Debian/Ubuntu machine (run as root):
#   make run    install what is missing, run the daemon in the foreground on etc/krsid.yaml
#   make test   install what is missing, run the whole suite (lint, unit, host, VM tiers)
SHELL := /bin/bash
PYTHON := /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= etc/krsid.yaml
PYTEST_FLAGS ?= -q

.PHONY: all deps run test lint test-host test-vm bench clean install uninstall

# Installed layout (DESTDIR for staging/packaging):
PREFIX_VENV ?= /opt/krsid
CONFDIR ?= /etc/krsid
DATADIR ?= /usr/share/krsid
UNITDIR ?= /etc/systemd/system
CATALOGDIR ?= /usr/lib/systemd/catalog
DOCDIR ?= /usr/share/doc/krsid
INSTALL_VENV ?= yes

all: test

# System packages (apt), then a venv that sees Debian's python3-bpfcc
# (--system-site-packages: the PyPI "bcc" is an unrelated package).
$(BIN)/krsid: setup.cfg pyproject.toml .ci/install-deps
	./.ci/install-deps
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

deps: $(BIN)/krsid
	./.ci/install-deps

# Foreground daemon on the shipped config. On a kernel that refuses BPF-LSM
# programs (like the development hosts), say why and run it in the test VM.
run: deps
	@if $(BIN)/krsid doctor --require-lsm-load >/dev/null 2>&1; then \
		exec $(BIN)/krsid run --config $(CONFIG); \
	else \
		$(BIN)/krsid doctor | grep -A1 -E '^\[FAIL\]' || true; \
		echo "================================================================"; \
		echo " This kernel cannot run BPF-LSM programs (see above)."; \
		echo " Running the same daemon inside the test VM (Debian kernel, qemu)"; \
		echo " with a small demo workload. Events print as JSON lines."; \
		echo " Stop with Ctrl-C, or set KRSID_DEMO_SECONDS (default 120)."; \
		echo "================================================================"; \
		exec tests/vm/run -- tests/vm/demo $(CONFIG); \
	fi

lint: deps
	$(BIN)/ruff check krsid tests bench
	$(BIN)/mypy

# Unit tests (no root, no bcc) and host tests (compile-only BCC, real journald,
# Prometheus, promtool): everything that needs no loadable LSM program.
test-host: deps
	$(BIN)/pytest $(PYTEST_FLAGS) -m "not vm" tests

# BPF-LSM end-to-end tests: one VM per header mode, pytest inside it.
test-vm: deps
	tests/vm/run -- $(BIN)/pytest $(PYTEST_FLAGS) -m vm -p no:cacheprovider tests/vm --headers=kernel
	tests/vm/run --no-headers -- $(BIN)/pytest $(PYTEST_FLAGS) -m vm -p no:cacheprovider tests/vm --headers=btf

test: lint test-host test-vm

# Compile cost on the host (native speed); load/attach and delivery in the VM.
# Every benchmark: compile and pipeline throughput on the host, then one VM session
# for load/attach, hook cost vs auditd, policy cost and the fallback's cost.
bench: deps
	$(BIN)/python bench/run.py all --headers kernel

# The daemon into its own venv (it sees Debian's python3-bpfcc), programs, config
# (an existing one is kept), the unit and the journald catalog.
install: deps
	install -d -m 0755 $(DESTDIR)$(CONFDIR) $(DESTDIR)$(DATADIR)/programs/include $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(CATALOGDIR) $(DESTDIR)$(DOCDIR)
	install -m 0644 programs/*.c programs/*.yaml $(DESTDIR)$(DATADIR)/programs/
	install -m 0644 programs/include/* $(DESTDIR)$(DATADIR)/programs/include/
	test -e $(DESTDIR)$(CONFDIR)/krsid.yaml || install -m 0644 etc/krsid.yaml $(DESTDIR)$(CONFDIR)/krsid.yaml
	install -m 0644 systemd/krsid.service $(DESTDIR)$(UNITDIR)/krsid.service
	install -m 0644 systemd/krsid.catalog $(DESTDIR)$(CATALOGDIR)/krsid.catalog
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	if [ "$(INSTALL_VENV)" = yes ]; then \
		$(PYTHON) -m venv --system-site-packages $(DESTDIR)$(PREFIX_VENV) && \
		$(DESTDIR)$(PREFIX_VENV)/bin/pip install -q --disable-pip-version-check . ; fi
	if [ -z "$(DESTDIR)" ]; then \
		journalctl --update-catalog || true; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; fi
	@echo "installed; start with: systemctl enable --now krsid"

uninstall:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now krsid || true; fi
	rm -f $(DESTDIR)$(UNITDIR)/krsid.service $(DESTDIR)$(CATALOGDIR)/krsid.catalog
	rm -rf $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(PREFIX_VENV)
	rm -f $(DESTDIR)$(CONFDIR)/krsid.yaml
	-rmdir $(DESTDIR)$(CONFDIR) 2>/dev/null
	if [ -z "$(DESTDIR)" ]; then journalctl --update-catalog || true; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; fi

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
