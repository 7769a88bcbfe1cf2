# gitmesh — the two commands a new user needs are `make run` and `make test`.

SHELL       := /bin/bash
GO          ?= go
BIN         := bin/gitmesh
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        := ./...

.PHONY: all build run demo test lint fmt bench bench-peers bench-serve bench-rollback fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/gitmesh

# The daemon on the bundled policies: a local repository made from policies/
# under .run/, no network needed. Ctrl-C stops it.
run: build
	$(BIN) validate policies/
	examples/quickstart.sh $(BIN) .run

# Bookinfo on proxyless gRPC, following commits: MeshHTTPRoutes splitting
# productpage's calls to reviews, with each version's share of 200 pages
# after each commit; then a line per page while a commit takes a permission
# away, an invalid commit changes nothing, and a rollback and a resume put
# it back and away again. It stops by itself; Ctrl-C stops it sooner.
demo: build
	$(GO) build -o bin/ ./examples/bookinfo/productpage ./examples/bookinfo/details ./examples/bookinfo/reviews ./examples/bookinfo/ratings
	$(GO) run ./examples/bookinfo/demo -bin bin -dir .run/bookinfo

# The whole suite, race detector on. Fails on unformatted code or vet findings.
test:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 8m $(PKGS)

lint:
	$(GO) run $(STATICCHECK) $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# The validators BenchmarkPeers compares gitmesh validate with, installed
# into a temporary directory named in GITMESH_PEERS: jv, the CLI of
# santhosh-tekuri/jsonschema v6 (pinned: @latest resolves to a 2019 CLI on
# jsonschema v1), and ajv-cli 5 from npm. Needs the Go module proxy and the
# npm registry.
JV     := github.com/santhosh-tekuri/jsonschema/cmd/jv@v0.7.0
AJVCLI := ajv-cli@5.0.0
define with-peers
set -eo pipefail; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
mkdir -p "$$d/mod" "$$d/bin"; \
(cd "$$d/mod" && $(GO) mod init peers >/dev/null 2>&1 && $(GO) get $(JV) >/dev/null 2>&1 && \
  $(GO) build -o "$$d/bin/jv" $(firstword $(subst @, ,$(JV)))) || { echo "cannot install $(JV)"; exit 1; }; \
npm install --prefix "$$d/npm" --silent --no-audit --no-fund $(AJVCLI) >/dev/null || { echo "cannot install $(AJVCLI)"; exit 1; }; \
export GITMESH_PEERS="$$d";
endef

# Speed figures: every benchmark of the module (see README "Speed" for the
# numbers). The libraries' benchmarks run for their default time; those of
# gitmesh as a process (validate, serve start, streams, peers, push, local
# commit, rollback) for a fixed count each, enough for their percentiles.
CMD_BENCH := BenchmarkValidate$$:3 BenchmarkServeStart:3 BenchmarkServeStreams:3 BenchmarkPeers:5 \
	BenchmarkWebhookToACK:100 BenchmarkLocalCommit:30 BenchmarkRollback:39
bench:
	@$(with-peers) \
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 60m $$($(GO) list $(PKGS) | grep -v /cmd/gitmesh$$); \
	for b in $(CMD_BENCH); do \
	  $(GO) test ./cmd/gitmesh -run '^$$' -bench "^$${b%:*}" -benchtime "$${b##*:}x" -timeout 30m | grep -E '^(Benchmark|FAIL|ok)' || exit 1; \
	done

# gitmesh validate beside jv and ajv-cli 5 on the same 10,000-resource tree,
# runs interleaved: each tool's wall and CPU time, and gitmesh's as ratios.
bench-peers:
	@$(with-peers) $(GO) test ./cmd/gitmesh -run '^$$' -bench BenchmarkPeers -benchtime 5x -timeout 30m

# Webhook to 1,000 ADS streams ACKing, one-file change in a 10,000-dataplane
# repository on a real git daemon; 100 pushes for the percentiles. Then a
# local commit to published, on the same mesh (30 commits).
bench-serve:
	$(GO) test ./cmd/gitmesh -run '^$$' -bench BenchmarkWebhookToACK -benchtime 100x -timeout 30m
	$(GO) test ./cmd/gitmesh -run '^$$' -bench BenchmarkLocalCommit -benchtime 30x -timeout 30m

# gitmesh rollback on the same mesh: to the commit served before and to one
# never served, with and without 1,000 connected proxies (39 rollbacks each).
bench-rollback:
	$(GO) test ./cmd/gitmesh -run '^$$' -bench BenchmarkRollback -benchtime 39x -timeout 30m

# Coverage-guided fuzzing of the policy loader; the seed corpus is committed.
fuzz:
	$(GO) test ./schema -run '^$$' -fuzz FuzzLoad -fuzztime 60s

clean:
	rm -rf bin
