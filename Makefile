# emostream: the two entry points. Both install what they need (servers into a per-user cache).
#   make test   format check, clippy, unit and integration tests against real servers
#   make demo   the pipeline on this machine (DELIVERY=AppSyncEvents: through AppSync Events;
#               IDENTITY=off: without the demo sign-in)
#   make bench  criterion micro-benchmarks; make figures: figures measured against real servers;
#               make replay-figures: the replay route's latency and size for a 3-hour recording
#   make load   the load test; make load-identity: identity off vs on; make crowd: ~19,500 listeners on one stream (DELIVERY=AppSyncEvents: 20,400 subscribers); make sam-build: the Lambda artifacts; make template-lint
#   make stress the tests 5 times in a row with every core kept busy (STRESS_RUNS=N for more)
#   make chaos  the fault run: 10 minutes at 1,000 taps/s while functions, broker and MongoDB fail

CARGO ?= cargo
DELIVERY ?= WebSocketApi
IDENTITY ?= on

.PHONY: test demo deps web-deps template-lint sam-build arm64-check load load-identity drain chaos crowd toolchain fmt-check clippy unit-and-integration bench figures replay-figures stress

test: toolchain deps web-deps fmt-check clippy template-lint unit-and-integration

toolchain:
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

deps:
	@local/deps.sh >/dev/null

web-deps:
	@local/web-deps.sh

# sam validate, sam validate --lint, cfn-lint and the checkov security scan (every skip carries
# its reason beside the resource), all offline (tools from local/aws-tools.sh).
template-lint:
	@eval "$$(local/aws-tools.sh)" && \
	  export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} && \
	  $$SAM validate && $$SAM validate --lint && $$CFN_LINT template.yaml && \
	  $$CHECKOV --file template.yaml --framework cloudformation --skip-download --compact --quiet && \
	  echo "template.yaml: sam validate, sam validate --lint, cfn-lint and checkov passed"

# sam build for every function (arm64, release; about 15 minutes from scratch on two cores).
sam-build:
	@eval "$$(local/aws-tools.sh)" && \
	  export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} PATH="$$CARGO_LAMBDA_DIR:$$PATH" && \
	  $$SAM build

# The arm64 artifacts of sam-build, run under qemu behind the local stack with a short load.
arm64-check:
	local/arm64-check.sh

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# --no-fail-fast: every test binary runs even when one fails, so one failure hides no other;
# cargo still exits non-zero when any test failed.
unit-and-integration:
	local/servers.sh run -- $(CARGO) test --workspace --locked --no-fail-fast

STRESS_RUNS ?= 5

# The tests under load: STRESS_RUNS runs in a row while stress-ng keeps every core busy.
stress:
	local/stress-test.sh $(STRESS_RUNS)

demo:
	DELIVERY=$(DELIVERY) IDENTITY=$(IDENTITY) local/demo.sh

bench:
	$(CARGO) bench -p emostream-ingest --bench validation
	$(CARGO) bench -p emostream-aggregate --bench aggregate
	local/servers.sh run -- $(CARGO) bench -p emostream-notify --bench fanout

# The load test of the README: 5,000 reactions/s for 60 s through a local stack of release
# binaries, with latency figures and the exactness check (LOAD_ARGS adds options).
load: deps
	$(CARGO) build --locked --release --bins -p emostream-ingest -p emostream-aggregate -p emostream-notify -p emostream-load
	local/servers.sh run -- target/release/emostream-load --start-stack --json target/load.json --plot target/load.png $(LOAD_ARGS)

# The fault run (docs/load-and-benchmarks.md#the-fault-run): the load test at 1,000 taps/s for
# 10 minutes with viewers retrying like the page, a fault every 30 s (function instances killed,
# broker frozen, MongoDB restarted, MongoDB connections stalled, slowed and cut); fails unless
# every stream's counted taps equal its sent taps (CHAOS_ARGS adds options). Fair use's limit is
# raised: taps a viewer holds back while its request is retried go out together afterwards, and
# fair use would rightly cut them above 40 per window (its own tests check it is exact).
chaos: deps
	$(CARGO) build --locked --release --bins -p emostream-ingest -p emostream-aggregate -p emostream-notify -p emostream-load
	local/servers.sh run -- target/release/emostream-load --start-stack --chaos --rate 1000 --viewers 400 --streams 4 --duration 600 --settle-timeout 180 --env MAX_TAPS_PER_VIEWER_PER_WINDOW=1000000 --json target/chaos.json $(CHAOS_ARGS)

# Viewer identity's cost: the load test twice through fresh stacks on the same servers, with
# identity off, then on (demo issuer; every viewer posts and every listener connects with a
# token); both print their ingest latency (LOAD_ARGS adds options to both).
load-identity: deps
	$(CARGO) build --locked --release --bins -p emostream-ingest -p emostream-aggregate -p emostream-notify -p emostream-load
	local/servers.sh run -- sh -c 'target/release/emostream-load --start-stack --json target/load-identity-off.json $(LOAD_ARGS) && target/release/emostream-load --start-stack --identity --json target/load-identity-on.json $(LOAD_ARGS)'

# The drain benchmark: a pre-produced backlog drained by the release aggregate binary through
# the local event source mapping; rate, MongoDB round trips per batch, exact counts (DRAIN_ARGS
# adds options, e.g. --shards 3 --batch-size 5000).
drain: deps
	$(CARGO) build --locked --release --bins -p emostream-ingest -p emostream-aggregate -p emostream-notify -p emostream-load
	local/servers.sh run -- target/release/emostream-drain $(DRAIN_ARGS)

# How fast GET /streams/{id}/replay answers for a 3-hour recording at 1 s resolution, and how
# large the answer is (docs/replay-and-moments.md; REPLAY_ARGS adds options).
replay-figures: deps
	$(CARGO) build --locked --release --bins -p emostream-ingest -p emostream-aggregate -p emostream-notify -p emostream-load
	local/servers.sh run -- target/release/emostream-replay $(REPLAY_ARGS)

# Listeners up to the open-file limit on one stream under the emulated AWS quotas; the stack
# and the load generator in two processes (see local/crowd.sh).
crowd: deps
	$(CARGO) build --locked --release --bins -p emostream-ingest -p emostream-aggregate -p emostream-notify -p emostream-load -p emostream-local
	DELIVERY=$(DELIVERY) local/crowd.sh $(CROWD_LISTENERS) $(LOAD_ARGS)

figures: deps
	local/servers.sh run -- sh -c '$(CARGO) test -p emostream-tests --test mongo_adapter one_write_per_window -- --nocapture && $(CARGO) test -p emostream-tests --test kafka_adapter first_acknowledgement -- --nocapture'
