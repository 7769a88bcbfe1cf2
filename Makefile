# gitmesh — the two commands a new user needs are `make run` and `make test`.

SHELL       := /bin/bash
GO          ?= go
BIN         := bin/gitmesh
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        := ./...

.PHONY: all build run demo test lint fmt bench bench-serve bench-rollback bench-ajv fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/gitmesh

# The daemon on the bundled policies: a local repository made from policies/
# under .run/, no network needed. Ctrl-C stops it.
run: build
	$(BIN) validate policies/
	examples/quickstart.sh $(BIN) .run

# Bookinfo on proxyless gRPC, following commits: a line per page while a
# commit takes a permission away, an invalid commit changes nothing, and a
# rollback and a resume put it back and away again. Ctrl-C stops it.
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

# Speed figures: every benchmark of the module (see README for the numbers).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 30m $(PKGS)

# Webhook to 1,000 ADS streams ACKing, one-file change in a 10,000-dataplane
# repository on a real git daemon; 100 pushes for the percentiles.
bench-serve:
	$(GO) test ./cmd/gitmesh -run '^$$' -bench BenchmarkWebhookToACK -benchtime 100x -timeout 30m

# gitmesh rollback on the same mesh: to the commit served before and to one
# never served, with and without 1,000 connected proxies (39 rollbacks each).
bench-rollback:
	$(GO) test ./cmd/gitmesh -run '^$$' -bench BenchmarkRollback -benchtime 39x -timeout 30m

# The validation benchmark's tree, one resource per file, through ajv-cli (npm)
# against the same JSON Schemas, and through gitmesh validate.
bench-ajv: build
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	$(GO) test ./schema -run TestWriteBenchTree -benchtree "$$d/tree" -benchtree-single >/dev/null; \
	npm install --prefix "$$d/npm" --silent --no-audit --no-fund ajv-cli@5 >/dev/null; \
	ajv="$$d/npm/node_modules/.bin/ajv"; s=schema/schemas; \
	echo "ajv-cli, $$(ls -R "$$d/tree" | grep -c yaml) files:"; \
	time (for t in dataplane trafficpermission mesh; do \
	  "$$ajv" validate --spec=draft2020 -s $$s/$$t.json -r $$s/common.json -d "$$d/tree/$$t/*.yaml" >/dev/null; done); \
	echo "gitmesh validate:"; time $(BIN) validate "$$d/tree"

# Coverage-guided fuzzing of the policy loader; the seed corpus is committed.
fuzz:
	$(GO) test ./schema -run '^$$' -fuzz FuzzLoad -fuzztime 60s

clean:
	rm -rf bin
