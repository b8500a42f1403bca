.PHONY: demo test chaos fuzz bench build services-stop

FUZZTIME ?= 2m

demo: ## run the fundraiser demo end to end
	scripts/demo.sh

test: ## every test, against real DynamoDB Local and redis-server
	scripts/test.sh

chaos: ## the chaos suite's long form (docs/RELIABILITY.md), a few minutes
	scripts/chaos.sh

bench: ## the benchmark table (docs/BENCHMARKS.md), about 12 minutes
	scripts/bench.sh

fuzz: ## each fuzzer for FUZZTIME (default 2m)
	go test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./internal/ddbjson
	go test -run '^$$' -fuzz '^FuzzFold$$' -fuzztime $(FUZZTIME) ./aggregate

build:
	go build -o bin/ ./cmd/...

services-stop:
	scripts/services.sh stop
