package gateway_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/chromedp/chromedp"

	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/internal/testenv"
)

var screenshot = flag.String("screenshot", "", "where TestDashboardInBrowser saves its screenshot (PNG); default a temporary file")

// chromium finds Debian's Chromium (scripts/deps.sh installs it), or the
// browser named by STREAMTALLY_CHROMIUM.
func chromium(t *testing.T) string {
	testenv.Needs(t, "chromium")
	if p := os.Getenv("STREAMTALLY_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed; scripts/deps.sh installs it")
	}
	return p
}

// buildBinary builds cmd/streamtally into a temporary directory.
func buildBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "streamtally")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/streamtally").CombinedOutput(); err != nil {
		t.Fatalf("build streamtally: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProcess runs the binary with args until the test ends, and shows
// its log if the test fails.
func startProcess(t testing.TB, name string, bin string, args ...string) *exec.Cmd {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("log of %s:\n%s", name, tail(string(b), 4000))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var donors = []struct{ platform, country, amount string }{
	{"Web", "DE", "25"}, {"Phone", "FR", "10.5"}, {"Web", "US", "100"}, {"Facebook", "DE", "7.25"},
	{"Mail", "UK", "50"}, {"Web", "FR", "12.99"}, {"Phone", "DE", "30"}, {"Facebook", "US", "5"},
}

func putDonation(t *testing.T, ddb *dynamodb.Client, table string, i int) {
	t.Helper()
	putDonationAt(t, ddb, table, i, time.Now())
}

// putDonationAt writes donation i as made at at.
func putDonationAt(t *testing.T, ddb *dynamodb.Client, table string, i int, at time.Time) {
	t.Helper()
	d := donors[i%len(donors)]
	if i%3 == 0 {
		d.platform = "Web" // uneven groups make a readable chart
	}
	_, err := ddb.PutItem(context.Background(), &dynamodb.PutItemInput{
		TableName: aws.String(table),
		Item: map[string]ddbtypes.AttributeValue{
			"email":     &ddbtypes.AttributeValueMemberS{Value: fmt.Sprintf("donor%d@example.org", i)},
			"donatedAt": &ddbtypes.AttributeValueMemberS{Value: at.UTC().Format(time.RFC3339Nano)},
			"platform":  &ddbtypes.AttributeValueMemberS{Value: d.platform},
			"amount":    &ddbtypes.AttributeValueMemberN{Value: d.amount},
			"address": &ddbtypes.AttributeValueMemberM{Value: map[string]ddbtypes.AttributeValue{
				"country": &ddbtypes.AttributeValueMemberS{Value: d.country},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestDashboardInBrowser runs the whole path: a donation written to
// DynamoDB Local reaches the number on the dashboard page in a headless
// Chromium, through the daemon, Redis and streamtally serve.
func TestDashboardInBrowser(t *testing.T) {
	browser := chromium(t)
	bin := buildBinary(t)
	endpoint := testenv.DynamoDB(t)
	redisAddr := testenv.Redis(t)
	ctx := context.Background()
	acfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
	if err != nil {
		t.Fatal(err)
	}
	ddb := dynamodb.NewFromConfig(acfg, func(o *dynamodb.Options) { o.BaseEndpoint = aws.String(endpoint) })
	n := time.Now().UnixNano()
	table := fmt.Sprintf("Donations_browser%d", n)
	if err := loadgen.CreateTable(ctx, ddb, table); err != nil {
		t.Fatal(err)
	}
	serveAddr := freeAddr(t)
	token := "dashboard-token-0123456789abcdef0123456789"
	cfg := filepath.Join(t.TempDir(), "streamtally.yaml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`
source: {table: %s, endpoint: %s, region: us-east-1, poll_interval: 50ms}
checkpoint: {app: browser%d, lease_duration: 3s, sync_interval: 300ms}
redis: {addr: %s, prefix: browser%d}
metrics: {addr: ""}
serve:
  addr: %s
  heartbeat: 2s
  tokens:
    - {name: wall, token: %s, views: ["*"]}
views:
  - name: by_platform
    group_by: [platform]
    measures: {donations: count, amount: sum(amount)}
  - name: by_country
    group_by: [address.country]
    measures: {donations: count}
  - name: per_hour
    group_by: [platform]
    measures: {donations: count, amount: sum(amount)}
    bucket: {size: 1h, time: donatedAt, retention: 2d}
`, table, endpoint, n, redisAddr, n, serveAddr, token)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	const before = 40
	// The page shows the current hour's bucket; should the hour turn while
	// the test runs, the count it waits for would move to the previous
	// bucket. Start in the new hour instead.
	if left := time.Until(time.Now().Truncate(time.Hour).Add(time.Hour)); left < 90*time.Second {
		t.Logf("waiting %s for the next hour to begin", left.Round(time.Second))
		time.Sleep(left + time.Second)
	}
	// Most donations are spread over the last day, so that the hourly
	// view has a shape; a fifth are made now.
	now := time.Now()
	thisHour := 0
	for i := range before {
		at := now
		if i%5 != 0 {
			at = now.Add(-time.Duration((i*7)%23) * time.Hour)
		}
		if at.Truncate(time.Hour).Equal(now.Truncate(time.Hour)) {
			thisHour++
		}
		putDonationAt(t, ddb, table, i, at)
	}
	startProcess(t, "run", bin, "run", "--config", cfg)
	startProcess(t, "serve", bin, "serve", "--config", cfg)
	base := "http://" + serveAddr
	testenv.WaitFor(t, 30*time.Second, "streamtally serve to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	actx, cancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(browser),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// The machine has no route out: without these Chromium waits on
		// outbound connections it makes on its own.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()

	total := func(view, measure string) string {
		return fmt.Sprintf(`document.querySelector('[data-total="%s/%s"]')`, view, measure)
	}
	// Waits, not speed targets: a minute is far more than the path needs.
	waitText := func(sel, want string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](fmt.Sprintf(`(%s||{}).textContent === %q`, sel, want),
			chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(time.Minute))
	}
	text := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := chromedp.Do(bctx,
		chromedp.Navigate(base+"/#token="+token),
		waitText(total("by_platform", "donations"), fmt.Sprint(before)),
		waitText(total("per_hour", "donations"), fmt.Sprint(thisHour)),
	); err != nil {
		t.Fatalf("the page never showed %d donations, %d of them this hour: %v", before, thisHour, err)
	}

	// The number on the page changes when a donation is written.
	putDonation(t, ddb, table, before)
	if err := chromedp.Do(bctx,
		waitText(total("by_platform", "donations"), fmt.Sprint(before+1)),
		waitText(total("by_country", "donations"), fmt.Sprint(before+1)),
		waitText(total("per_hour", "donations"), fmt.Sprint(thisHour+1)),
		waitText(`document.querySelector('#conn-text')`, "live"),
	); err != nil {
		t.Fatalf("the page did not show the new donation: %v", err)
	}
	if url := text(`location.href`); strings.Contains(url, token) {
		t.Errorf("the token stays in the page's address: %s", url)
	}
	t.Logf("page: connection %s, %s, amount %s", text(`document.querySelector('#conn-text').textContent`),
		text(`document.querySelector('[data-version="by_platform"]').textContent`), text(total("by_platform", "amount")+`.textContent`))

	// A few more, spread out, so that the screenshot's lines have a shape.
	const after = before + 1 + 8
	for i := before + 1; i < after; i++ {
		time.Sleep(400 * time.Millisecond)
		putDonation(t, ddb, table, i)
	}
	if err := chromedp.Do(bctx,
		waitText(total("by_platform", "donations"), fmt.Sprint(after)),
		waitText(total("per_hour", "donations"), fmt.Sprint(thisHour+after-before)),
		chromedp.Sleep(time.Second),
	); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100 gives a PNG, less a JPEG
	if err != nil {
		t.Fatal(err)
	}
	path := *screenshot
	if path == "" {
		path = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
