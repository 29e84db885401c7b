# emostream: the two entry points. Both install what they need (servers into a per-user cache).
#   make test   format check, clippy, unit and integration tests against real servers
#   make demo   the pipeline on this machine
#   make bench  criterion micro-benchmarks; make figures: figures measured against real servers

CARGO ?= cargo

.PHONY: test demo deps web-deps toolchain fmt-check clippy unit-and-integration bench figures

test: toolchain deps web-deps fmt-check clippy unit-and-integration

toolchain:
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

deps:
	@local/deps.sh >/dev/null

web-deps:
	@local/web-deps.sh

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit-and-integration:
	local/servers.sh run -- $(CARGO) test --workspace --locked

demo:
	local/demo.sh

bench:
	$(CARGO) bench -p emostream-ingest --bench validation
	$(CARGO) bench -p emostream-aggregate --bench aggregate
	local/servers.sh run -- $(CARGO) bench -p emostream-notify --bench fanout

figures: deps
	local/servers.sh run -- $(CARGO) test -p emostream-tests --test mongo_adapter one_write_per_window -- --nocapture
