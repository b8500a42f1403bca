.PHONY: demo test build services-stop

demo: ## run the fundraiser demo end to end
	scripts/demo.sh

test: ## every test, against real DynamoDB Local and redis-server
	scripts/test.sh

build:
	go build -o bin/ ./cmd/...

services-stop:
	scripts/services.sh stop
