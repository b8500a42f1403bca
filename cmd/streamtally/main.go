// Command streamtally keeps exact counters of a DynamoDB table in Redis,
// fed by the table's stream.
//
//	streamtally run --config streamtally.yaml
//	streamtally snapshot --config streamtally.yaml --view by_platform
//	streamtally backfill --config streamtally.yaml [--view by_platform]
//	streamtally verify --config streamtally.yaml [--view by_platform]
//	streamtally rebuild --config streamtally.yaml --view by_platform
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/source/ddbstreams"
)

const usage = `usage: streamtally <command> [flags]

commands:
  run       --config FILE              read the stream and keep the counters
  snapshot  --config FILE --view NAME  print one view's counters and version as JSON
            [--from TIME] [--to TIME]  bucketed views: the buckets in [from, to) (default: the last 24)
  status    --config FILE [--json]     show each shard's lease owner, checkpoint and lag
  dlq       --config FILE [--view NAME] [--limit N] [--json]
                                       list the dead letters, newest first (default limit 50)
  healthcheck [--addr HOST:PORT]       exit 0 if the daemon's /readyz answers 200 (default 127.0.0.1:9090)
  serve     --config FILE              the live dashboard and its API over Server-Sent Events (serve.addr)
  token     --config FILE --views A,B [--ttl 24h] [--sub NAME]
                                       print a signed token for serve.hmac_secret
  backfill  --config FILE [--view NAME] [recount flags]
                                       count the views from the table and hand them over to the stream
  rebuild   --config FILE --view NAME [recount flags]
                                       recount one view into fresh keys and swap it in atomically
  verify    --config FILE [--view NAME] [recount flags]
                                       compare the views with the table; exit 1 on any difference

recount flags: --segments N (4) --rate ITEMS_PER_S (0: no limit) --page-size N (500)
               --settle DURATION (2s) --hold DURATION (30s)
`

// Exit codes: 1 for a runtime failure, 2 for something the user must fix
// in the configuration, the table or the command line.
const (
	exitFailure = 1
	exitConfig  = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	// The subcommands report Redis errors in their own words; only run
	// keeps go-redis's messages, in its log.
	redis.SetLogger(redisLog{slog.New(slog.DiscardHandler)})
	code := runCLI(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func runCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout)
	case "snapshot":
		err = cmdSnapshot(ctx, args[1:], stdout)
	case "status":
		err = cmdStatus(ctx, args[1:], stdout)
	case "dlq":
		err = cmdDLQ(ctx, args[1:], stdout)
	case "healthcheck":
		err = cmdHealthcheck(ctx, args[1:], stdout)
	case "serve":
		err = cmdServe(ctx, args[1:], stdout)
	case "token":
		err = cmdToken(ctx, args[1:], stdout)
	case "backfill":
		err = cmdBackfill(ctx, args[1:], stdout)
	case "rebuild":
		err = cmdRebuild(ctx, args[1:], stdout)
	case "verify":
		err = cmdVerify(ctx, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "streamtally: unknown command %q\n%s", args[0], usage)
		return exitConfig
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "streamtally: %v\n", err)
	var cfgErr *config.Error
	var streamErr *ddbstreams.StreamError
	var usageErr usageError
	if errors.As(err, &cfgErr) || errors.As(err, &streamErr) || errors.As(err, &usageErr) {
		return exitConfig
	}
	return exitFailure
}

type usageError string

func (e usageError) Error() string { return string(e) }
