# Set-up and everyday commands. Both `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-pure venv bench clean system-deps postgres postgres-stop

# The modules setup.py compiles with mypyc (docs/building.md). The editable install imports
# their extension modules, so editing one of these sources means building again.
COMPILED_SOURCES := $(addprefix switchboard/amqp/,codec.py framing.py fastpath.py delivery.py \
	link.py session.py connection.py message.py events.py) \
	$(addprefix switchboard/router/,core.py forwarders.py credit.py links.py addresses.py traffic.py \
	memory.py interrouter.py)

$(STAMP): pyproject.toml setup.py $(COMPILED_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests and benchmarks use: Qpid Proton's C examples (a peer we did not write),
# openssl for throw-away test certificates, and the PostgreSQL server the store's tests start
# (their own private cluster; nothing is configured system-wide), and Chromium with its driver for the
# topology page's browser test. Skipped when not root or not on Debian.
system-deps:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  if ! dpkg -s libqpid-proton11-dev-examples openssl postgresql chromium chromium-driver >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libqpid-proton11-dev libqpid-proton11-dev-examples openssl postgresql chromium chromium-driver >/dev/null; \
	  fi; \
	fi

# A throw-away PostgreSQL for development (docs/store-postgres.md): data under .postgres/,
# listening on 127.0.0.1:$(PG_PORT) only, trust authentication, superuser and database
# `switchboard`. Run as root, the server runs as the `postgres` user.
PG_PORT ?= 54329
PG_DIR := $(CURDIR)/.postgres
PG_BINDIR ?= $(shell ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
PG_AS = $$(if [ "$$(id -u)" = 0 ]; then echo runuser -u postgres --; fi)

postgres:
	@test -x "$(PG_BINDIR)/initdb" || { echo "PostgreSQL server binaries not found: make system-deps (or set PG_BINDIR)"; exit 1; }
	@if [ ! -f $(PG_DIR)/data/PG_VERSION ]; then \
	  mkdir -p $(PG_DIR) && if [ "$$(id -u)" = 0 ]; then chown postgres: $(PG_DIR); fi && \
	  $(PG_AS) $(PG_BINDIR)/initdb -D $(PG_DIR)/data -U switchboard --auth=trust \
	    --encoding=UTF8 --locale=C >$(PG_DIR)/initdb.log || { cat $(PG_DIR)/initdb.log; exit 1; }; \
	fi
	@if ! $(PG_AS) $(PG_BINDIR)/pg_ctl -D $(PG_DIR)/data status >/dev/null 2>&1; then \
	  $(PG_AS) $(PG_BINDIR)/pg_ctl -D $(PG_DIR)/data -l $(PG_DIR)/server.log -w -t 60 \
	    -o "-c listen_addresses=127.0.0.1 -p $(PG_PORT) -c unix_socket_directories=" start >/dev/null \
	    || { tail -n 20 $(PG_DIR)/server.log; exit 1; }; \
	fi
	@if [ -z "$$($(PG_BINDIR)/psql -h 127.0.0.1 -p $(PG_PORT) -U switchboard -d postgres -tAc \
	    "SELECT 1 FROM pg_database WHERE datname = 'switchboard'")" ]; then \
	  $(PG_BINDIR)/createdb -h 127.0.0.1 -p $(PG_PORT) -U switchboard switchboard; \
	fi
	@echo "PostgreSQL is running (data in .postgres/, log in .postgres/server.log)."
	@echo "dsn = \"postgresql://switchboard@127.0.0.1:$(PG_PORT)/switchboard\""

postgres-stop:
	@if [ -f $(PG_DIR)/data/PG_VERSION ] && $(PG_AS) $(PG_BINDIR)/pg_ctl -D $(PG_DIR)/data status >/dev/null 2>&1; then \
	  $(PG_AS) $(PG_BINDIR)/pg_ctl -D $(PG_DIR)/data -m fast -w stop >/dev/null && echo "PostgreSQL stopped."; \
	else echo "PostgreSQL (.postgres/) is not running."; fi

# What bench/queue.py compares against: RabbitMQ from Debian (PostgreSQL comes with
# system-deps). The script starts private instances itself (temporary data directories, free
# loopback ports); it never uses the system services the packages may start. Valgrind
# counts instructions for bench/core_instructions.py. Skipped when not root or not on Debian.
.PHONY: bench-deps
bench-deps: system-deps
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  if ! dpkg -s rabbitmq-server valgrind >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      rabbitmq-server valgrind >/dev/null; \
	  fi; \
	fi

run: $(STAMP)
	$(BIN)/switchboard router

# The suite runs in PYTEST_WORKERS processes (pytest-xdist), one test file per worker at a
# time: most tests wait on router processes and timers, not on the CPU.  PYTEST_WORKERS=0
# runs it in one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist loadfile

test: $(STAMP) system-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)
	$(MAKE) test-pure

# The pure-Python build (SWITCHBOARD_PURE_PYTHON=1) on the engine and router suites, in its
# own venv over a copy of the sources without extension modules: an editable install
# imports the modules it finds in its source tree, and this tree holds the compiled ones.
PURE_DIR := build/pure
PURE_BIN := $(PURE_DIR)/.venv/bin
PURE_SUITES ?= tests/packaging tests/amqp tests/router

test-pure:
	rm -rf $(PURE_DIR)/switchboard $(PURE_DIR)/tests $(PURE_DIR)/docs $(PURE_DIR)/tools
	mkdir -p $(PURE_DIR)
	tar -cf - --exclude='*.so' --exclude='*.pyd' --exclude=__pycache__ \
	  pyproject.toml setup.py README.md switchboard tests docs tools | tar -xf - -C $(PURE_DIR)
	@if [ ! -f $(PURE_DIR)/.venv/.installed ] || [ pyproject.toml -nt $(PURE_DIR)/.venv/.installed ] \
	    || [ setup.py -nt $(PURE_DIR)/.venv/.installed ]; then \
	  $(PYTHON) -m venv $(PURE_DIR)/.venv && \
	  $(PURE_BIN)/pip install --quiet --upgrade pip && \
	  cd $(PURE_DIR) && SWITCHBOARD_PURE_PYTHON=1 .venv/bin/pip install --quiet -e '.[test]' && \
	  touch .venv/.installed; \
	fi
	cd $(PURE_DIR) && SWITCHBOARD_PURE_PYTHON=1 .venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_PARALLEL) \
	  $(PURE_SUITES)

bench: $(STAMP) system-deps
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/router.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache switchboard__mypyc.*
	find switchboard -name '*.so' -delete
