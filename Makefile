# Set-up and everyday commands. Both `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test venv bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests and benchmarks use: Qpid Proton's C examples (a peer we did not write)
# and openssl for throw-away test certificates. Skipped when not root or not on Debian.
system-deps:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  if ! dpkg -s libqpid-proton11-dev-examples openssl >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libqpid-proton11-dev libqpid-proton11-dev-examples openssl >/dev/null; \
	  fi; \
	fi

# What bench/queue.py compares against: RabbitMQ and PostgreSQL 15 from Debian. The script
# starts private instances itself (temporary data directories, free loopback ports); it never
# uses the system services the packages may start. Skipped when not root or not on Debian.
.PHONY: bench-deps
bench-deps: system-deps
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  if ! dpkg -s rabbitmq-server postgresql-15 >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      rabbitmq-server postgresql-15 >/dev/null; \
	  fi; \
	fi

run: $(STAMP)
	$(BIN)/switchboard router

test: $(STAMP) system-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: $(STAMP) system-deps
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/router.py

clean:
	rm -rf $(VENV) build *.egg-info
