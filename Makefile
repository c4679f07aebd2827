# caledger: the two commands a new user runs are `make run` and `make test`.
# Both install what is missing (Debian packages through apt-get) first.

GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
DATA    ?= ./data
ADDR    ?= 127.0.0.1:8443
BIN     := bin/caledger
MODULE  := github.com/caledger/caledger

# System packages: gcc and libc6-dev build SQLite and the PKCS#11 bindings (cgo);
# softhsm2 stands in for an HSM in tests; openssl is the outside peer in
# interoperability tests and the README's examples, which a test runs with curl;
# slapd is the LDAP directory certificates are published to (tests start their
# own; the package is told to configure no system directory), and ldap-utils'
# ldapsearch reads it as a mail client would; openssh-client's ssh-agent holds
# the key of the witness the tests start (below).
RUN_PACKAGES  := gcc libc6-dev
TEST_PACKAGES := $(RUN_PACKAGES) softhsm2 openssl curl slapd ldap-utils openssh-client

# litewitness, a C2SP tlog-witness that the project does not control, cosigns
# the ledger's checkpoints in the tests (projections/witness/witnesstest finds
# it in bin/). v0.10.0 and later need Go 1.27.
LITEWITNESS := filippo.io/torchwood/cmd/litewitness@v0.9.0

.PHONY: run build test bench fuzz deps-run deps-test check-domain vet help

help:
	@echo "make run     build and serve on https://$(ADDR) (publication on http://127.0.0.1:8080) with data in $(DATA)"
	@echo "make test    every test (installs softhsm2, openssl, curl, slapd, ldap-utils, openssh-client, gcc and bin/litewitness if missing)"
	@echo "make bench   benchmarks and the figures of BENCHMARKS.md"
	@echo "make fuzz    run each fuzz target for FUZZTIME (default 30s)"

# The first run creates the CAs, the server certificate and the admin
# credential in $(DATA); later runs reuse them.
run: deps-run build
	./$(BIN) init --data $(DATA) --if-needed
	./$(BIN) serve --data $(DATA) --addr $(ADDR)

build:
	$(GO) build -o $(BIN) ./cmd/caledger

test: deps-test bin/litewitness check-domain vet
	$(GO) test -race -count=1 -timeout 14m ./...

# Rebuilt when the Makefile (and so perhaps the pin) changes.
bin/litewitness: Makefile
	GOBIN=$(CURDIR)/bin $(GO) install $(LITEWITNESS)
	@touch $@

# The ledger figures need a quiet machine: run nothing else meanwhile.
bench: deps-test bin/litewitness
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./...
	$(GO) run ./sims/ledgerbench -duration 5s
	$(GO) run ./sims/logbench -rounds 8
	$(GO) run ./sims/issuebench -duration 10s
	$(GO) run ./sims/issuebench -duration 10s -hsm

FUZZTIME ?= 30s
fuzz:
	@for target in $$(grep -rho --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/func //' | sort -u); do \
	  pkg=$$(grep -rl --include='*_test.go' "^func $$target(" . | head -1 | xargs dirname); \
	  echo "fuzz $$target in $$pkg"; \
	  $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...

# domain/ imports only the standard library (DESIGN.md).
check-domain:
	@bad=$$($(GO) list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./domain/... | grep -v '^$(MODULE)/domain$$' || true); \
	if [ -n "$$bad" ]; then echo "domain/ depends on packages outside the standard library:"; echo "$$bad"; exit 1; fi

deps-run:
	@$(MAKE) --no-print-directory apt PACKAGES="$(RUN_PACKAGES)"

deps-test:
	@$(MAKE) --no-print-directory apt PACKAGES="$(TEST_PACKAGES)"

# apt installs the Debian packages in PACKAGES that are not installed yet.
.PHONY: apt
apt:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  echo "slapd slapd/no_configuration boolean true" | $$sudo debconf-set-selections && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
