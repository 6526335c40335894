# The two commands that matter on a fresh Debian/Ubuntu machine (run as root):
#   make run    install what is missing, run the daemon in the foreground on etc/krsid.yaml
#   make test   install what is missing, run the whole suite (lint, unit, host, VM tiers)
SHELL := /bin/bash
PYTHON := /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= etc/krsid.yaml
PYTEST_FLAGS ?= -q

.PHONY: all deps run test lint test-host test-vm test-matrix bench clean install uninstall deb

# Installed layout (DESTDIR for staging/packaging):
PREFIX_VENV ?= /opt/krsid
CONFDIR ?= /etc/krsid
DATADIR ?= /usr/share/krsid
UNITDIR ?= /etc/systemd/system
CATALOGDIR ?= /usr/lib/systemd/catalog
DOCDIR ?= /usr/share/doc/krsid
INSTALL_VENV ?= yes

# The Debian package (`make deb`): version from krsid/__init__.py, built in DEB_DIR
# from a copy of PKG_SOURCES (dpkg-buildpackage writes its results to the parent of
# the tree it builds, which must not be the checkout's parent).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' krsid/__init__.py)
DEB_DIR ?= build/deb
DEB := $(DEB_DIR)/krsid_$(VERSION)_all.deb
PKG_SOURCES := README.md setup.cfg pyproject.toml krsid programs systemd etc debian
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin

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
		exec tests/vm/run -- $(BIN)/python tests/vm/demo $(CONFIG); \
	fi

lint: deps
	$(BIN)/ruff check krsid tests bench
	$(BIN)/mypy

# Unit tests (no root, no bcc) and host tests (compile-only BCC, real journald,
# Prometheus, promtool): everything that needs no loadable LSM program.
# `make run`'s own test boots the test VM (~3 min of one core under TCG, half the
# tier's time when run in line), so it runs beside the rest, which keep the other
# core; its output is printed after theirs, and the tier fails if either fails. It
# runs without pytest's cache (-p no:cacheprovider): one writer of .pytest_cache.
MAKE_RUN_TEST := tests/host/test_make_run.py
test-host: deps
	@mkdir -p build; echo "$(MAKE_RUN_TEST): started beside the other host tests"; \
	$(BIN)/pytest $(PYTEST_FLAGS) -p no:cacheprovider $(MAKE_RUN_TEST) > build/test-make-run.log 2>&1 & demo=$$!; \
	$(BIN)/pytest $(PYTEST_FLAGS) -m "not vm" tests --deselect $(MAKE_RUN_TEST); rest=$$?; \
	wait $$demo; demo_rc=$$?; echo "$(MAKE_RUN_TEST) (exit $$demo_rc):"; cat build/test-make-run.log; \
	test $$rest -eq 0 -a $$demo_rc -eq 0

# BPF-LSM end-to-end tests, in VMs (tests/vm/matrix, two VMs at once: one vCPU each on
# a 2-core machine): the whole VM suite on the default kernel (Debian's 6.12) with its
# kernel headers, and beside it the kernel matrix, every Debian kernel series with
# BTF-generated headers (5.10 is refused at start, as documented; the per-hook tests at
# both ends of the range, 6.1 and the newest, tests/vm/matrix BETWEEN_SELECTION between
# them). The default kernel's
# BTF run (only test_matrix.py of the selection: the whole suite covers the rest) installs
# the .deb built here (tests/vm/test_deb_package.py, KRSID_DEB)
# and floods with the bulk lane at its minimum. Prints each run's output, result and
# time; results in build/matrix/, the README's kernel table from them:
# tests/vm/matrix_table.py.
MATRIX_KERNELS ?= 5.10,6.1,6.12,7.2,7.3
MATRIX_MODES ?= btf
MATRIX_FULL ?= 6.12:kernel
MATRIX_JOBS ?= 2
test-vm: deps $(DEB)
	KRSID_DEB=$(abspath $(DEB)) tests/vm/matrix --kernels $(MATRIX_KERNELS) --modes $(MATRIX_MODES) \
		--full $(MATRIX_FULL) --jobs $(MATRIX_JOBS)

# The matrix alone (no whole-suite run), e.g. MATRIX_KERNELS=7.3 MATRIX_MODES=btf,kernel.
test-matrix: deps
	tests/vm/matrix --kernels $(MATRIX_KERNELS) --modes $(MATRIX_MODES) --jobs $(MATRIX_JOBS)

test: lint test-host test-vm

# Compile cost on the host (native speed); load/attach and delivery in the VM.
# Every benchmark: compile and pipeline throughput on the host, then one VM session
# for load/attach, hook cost vs auditd, policy cost and the fallback's cost.
bench: deps
	$(BIN)/python bench/run.py all --headers kernel

# A source install (the Debian package, `make deb`, is the primary path): the daemon
# into its own venv (it sees Debian's python3-bpfcc), programs, config (an existing one
# is kept), the unit (ExecStart pointed at the venv) and the journald catalog. Only the
# runtime packages (.ci/install-deps --runtime): no test tooling on a production host,
# and none at all when staging into a DESTDIR.
install:
	if [ -z "$(DESTDIR)" ]; then ./.ci/install-deps --runtime; fi
	install -d -m 0755 $(DESTDIR)$(CONFDIR) $(DESTDIR)$(DATADIR)/programs/include $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(CATALOGDIR) $(DESTDIR)$(DOCDIR)
	install -m 0644 programs/*.c programs/*.yaml $(DESTDIR)$(DATADIR)/programs/
	install -m 0644 programs/include/* $(DESTDIR)$(DATADIR)/programs/include/
	test -e $(DESTDIR)$(CONFDIR)/krsid.yaml || install -m 0644 etc/krsid.yaml $(DESTDIR)$(CONFDIR)/krsid.yaml
	sed 's|^ExecStart=/usr/bin/krsid |ExecStart=$(PREFIX_VENV)/bin/krsid |' systemd/krsid.service \
		> $(DESTDIR)$(UNITDIR)/krsid.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/krsid.service
	grep -q '^ExecStart=$(PREFIX_VENV)/bin/krsid ' $(DESTDIR)$(UNITDIR)/krsid.service || { echo \
		"make install: systemd/krsid.service has no 'ExecStart=/usr/bin/krsid ' to point at $(PREFIX_VENV)" >&2; exit 1; }
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

# Rebuilt when any packaged file changed; lintian errors fail the build (its full
# report: $(DEB_DIR)/lintian.txt).
deb: $(DEB)

$(DEB): $(shell find $(PKG_SOURCES) -type f -not -path '*/__pycache__/*' 2>/dev/null) Makefile
	./.ci/install-deps --packaging
	@changelog=$$(dpkg-parsechangelog -l debian/changelog -S Version); \
	if [ "$$changelog" != "$(VERSION)" ]; then \
		echo "make deb: debian/changelog is at $$changelog but krsid/__init__.py at $(VERSION):" \
			"add a changelog entry for $(VERSION) (dch -v $(VERSION))" >&2; exit 1; fi
	rm -rf $(DEB_DIR)/src $(DEB_DIR)/krsid_*
	mkdir -p $(DEB_DIR)/src
	tar -cf - --exclude=__pycache__ --exclude='*.pyc' $(PKG_SOURCES) | tar -xf - -C $(DEB_DIR)/src
	# The system's PATH: pybuild runs `python3.X` from PATH, which must be Debian's
	# (a pyenv or venv python first on PATH has neither its modules nor its paths).
	cd $(DEB_DIR)/src && env PATH=$(DEB_PATH) dpkg-buildpackage --build=binary --no-sign
	# lintian leaves Berkeley DB files (mldbm-elf-*) in $$TMPDIR: keep them in the build dir.
	rm -rf $(DEB_DIR)/tmp && mkdir -p $(DEB_DIR)/tmp
	env PATH=$(DEB_PATH) TMPDIR=$(abspath $(DEB_DIR))/tmp lintian --fail-on error --display-info $@ \
		> $(DEB_DIR)/lintian.txt 2>&1 \
		|| { cat $(DEB_DIR)/lintian.txt; echo "make deb: lintian reports errors" >&2; rm -f $@; exit 1; }
	rm -rf $(DEB_DIR)/tmp
	cat $(DEB_DIR)/lintian.txt
	@echo "built $@"

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache $(DEB_DIR)
