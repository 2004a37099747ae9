package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/delaylink"
	"github.com/launcherd/launcher/internal/loadgen"
)

// Environment of the load client that TestHandshakesInFlightOnASlowLink
// runs in the client's namespace (a copy of this test binary).
const (
	envSlowClient  = "LAUNCHER_E2E_SLOW_CLIENT"  // the service's address
	envSlowClients = "LAUNCHER_E2E_SLOW_CLIENTS" // how many, and ns between their starts
)

// The slow link's addresses, which exist only in the test's two
// namespaces; the service listens on the first.
var (
	slowServerAddr = netip.MustParsePrefix("10.77.0.1/24")
	slowClientAddr = netip.MustParsePrefix("10.77.0.2/24")
)

// slowResult is what the load client reports on its last line.
type slowResult struct {
	Requests, Failures, Aborted int64
	MinLatency                  time.Duration
	Count                       map[string]int64
	Versions                    map[string]int64
	Samples                     []string
}

// add counts r in res.
func (res *slowResult) add(r *loadgen.Result) {
	res.Requests += r.Requests
	res.Failures += r.Failures()
	res.Aborted += r.Aborted
	for c, n := range r.Count {
		if n > 0 {
			res.Count[loadgen.Class(c).String()] += n
		}
	}
	for v, n := range r.Versions {
		res.Versions[v] += n
	}
	for c := range r.Samples {
		res.Samples = append(res.Samples, r.Samples[c]...)
	}
	for rec := range r.Records() {
		if rec.Class == loadgen.OK && (res.MinLatency == 0 || rec.Latency < res.MinLatency) {
			res.MinLatency = rec.Latency
		}
	}
}

// TestHandshakesInFlightOnASlowLink upgrades a service 10 times with
// --probation 0 while 16 never-retrying clients, 100 ms and 300 ms away,
// open a new connection per request: not one may fail.
//
// Over such a link a handshake the old listener answered completes a
// round trip later, when the client's ACK comes: until then it is a
// request socket (SYN_RECV), not in the accept queue, and closing the
// listener meanwhile resets it (issue #11). netem is not built into the
// CI kernel, so the delay comes from internal/delaylink: two network
// namespaces this test creates, the supervisor and its workers in one,
// the client (this binary again, under ip netns exec) in the other.
//
// With 2 workers per generation the old ones quiesce at once before each
// closes in turn; with 1 it is closed right away.
func TestHandshakesInFlightOnASlowLink(t *testing.T) {
	// Parallel, with the other delayed-link tests: they mostly wait on
	// the link's delay, and each has namespaces of its own.
	t.Parallel()
	for _, tc := range []struct {
		delay   time.Duration
		workers int
	}{
		{100 * time.Millisecond, 1},
		{300 * time.Millisecond, 1},
		{100 * time.Millisecond, 2},
	} {
		t.Run(fmt.Sprintf("delay=%v,workers=%d", tc.delay, tc.workers), func(t *testing.T) {
			t.Parallel()
			testSlowLinkUpgrades(t, tc.delay, tc.workers)
		})
	}
}

func testSlowLinkUpgrades(t *testing.T, delay time.Duration, workers int) {
	needNetns(t)
	const (
		upgrades = 10
		clients  = 16
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pair, err := delaylink.NewPair(ctx, delaylink.PairConfig{
		Name:  fmt.Sprintf("lsyn-%d-%d-%d", os.Getpid(), delay.Milliseconds(), workers),
		AddrA: slowServerAddr, AddrB: slowClientAddr, Delay: delay,
	})
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("network namespaces with a delayed link: %v", err)
		}
		t.Skipf("cannot make network namespaces with a delayed link: %v", err)
	}
	t.Cleanup(func() { // after the processes in them are gone
		if err := pair.Close(); err != nil {
			t.Errorf("remove the namespaces: %v", err)
		}
	})

	addr := slowServerAddr.Addr().String() + ":8080"
	s := startSupWrapped(t, []string{"ip", "netns", "exec", pair.NetnsA}, addr,
		filepath.Join(shortTempDir(t), "s"), "--probation", "0", "--workers", fmt.Sprint(workers))

	// A request takes two round trips; the clients' starts spread over
	// that time.
	client := startSlowClient(t, pair.NetnsB, addr, clients, 4*delay/clients)
	if err := client.waitReady(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * delay) // every client has a request under way
	// Upgrades far enough apart that each generation serves a few
	// requests of every client (each takes two round trips).
	start := time.Now()
	last := s.upgradeLoopEvery(upgrades, 5*delay)
	took := time.Since(start)
	time.Sleep(4 * delay) // requests started on the last generation end
	r := client.stop(t)
	t.Logf("%d upgrades in %v; the last, command to old generation gone: %v",
		upgrades, took.Round(time.Millisecond), last.Round(time.Millisecond))

	t.Logf("%v one way: %d requests, %d failed %v, %d cut at the end, versions %v, fastest %v",
		delay, r.Requests, r.Failures, r.Count, r.Aborted, r.Versions, r.MinLatency)
	if r.Failures > 0 {
		t.Errorf("%d of %d requests failed through %d upgrades: %v", r.Failures, r.Requests, upgrades, r.Samples)
	}
	if r.Requests < 100 || r.Versions["v1"] == 0 || r.Versions["v2"] == 0 {
		t.Errorf("%d requests, versions %v; want at least 100, both v1 and v2", r.Requests, r.Versions)
	}
	// A request on a new connection takes two round trips: the handshake,
	// then the request and its response.
	if rtt := 2 * delay; r.MinLatency < 2*rtt {
		t.Errorf("fastest request took %v; want at least two round trips (%v): is the link delayed?", r.MinLatency, 2*rtt)
	}
	if fwd, drop := pair.Link.Stats(); drop != 0 {
		t.Errorf("the link dropped %d of %d packets", drop, fwd+drop)
	}
}

// needNetns skips the test unless it can make network namespaces and TUN
// devices, and fails it in CI, where it must.
func needNetns(t *testing.T) {
	t.Helper()
	_, ipErr := exec.LookPath("ip")
	_, tunErr := os.Stat("/dev/net/tun")
	if os.Getuid() == 0 && ipErr == nil && tunErr == nil {
		return
	}
	msg := fmt.Sprintf("needs root, ip(8) and /dev/net/tun for network namespaces with a delayed link (uid %d; ip: %v; tun: %v)", os.Getuid(), ipErr, tunErr)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// slowClient is the load client running in the client's namespace.
type slowClient struct {
	cmd   *exec.Cmd
	stdin io.Closer
	lines chan string // its stdout, line by line; closed at its end
	done  chan error
	log   strings.Builder // its output, for a failure
}

// startSlowClient runs this test binary as a load client in namespace ns.
// It prints READY once a first request got an answer, then drives the
// load, and prints its result once its stdin closes. Cleanup kills it if
// it is still running.
func startSlowClient(t *testing.T, ns, addr string, clients int, stagger time.Duration) *slowClient {
	t.Helper()
	c := &slowClient{lines: make(chan string, 64), done: make(chan error, 1)}
	c.cmd = exec.Command("ip", "netns", "exec", ns, os.Args[0],
		"-test.run", "^TestSlowLinkClientHelper$", "-test.v", "-test.count=1")
	c.cmd.Env = append(os.Environ(), envSlowClient+"="+addr, envSlowClients+"="+fmt.Sprint(clients, " ", int64(stagger)), envBins+"="+bins.dir)
	c.cmd.Stderr = os.Stderr
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.stdin = stdin
	go func() { // ends when the client exits and closes its stdout
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.done <- c.cmd.Wait()
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		for range c.lines {
		}
	})
	return c
}

// waitReady waits until the client says the service answers.
func (c *slowClient) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				return fmt.Errorf("load client ended early: %v\n%s", <-c.done, c.log.String())
			}
			c.log.WriteString(line + "\n")
			if line == "READY" {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("load client: the service did not answer within %v:\n%s", timeout, c.log.String())
		}
	}
}

// stop closes the client's stdin, which ends its load (requests in flight
// are cut and not counted), and returns its result.
func (c *slowClient) stop(t *testing.T) slowResult {
	t.Helper()
	c.stdin.Close()
	var res *slowResult
	timeout := time.After(30 * time.Second)
	for res == nil {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("load client printed no result:\n%s", c.log.String())
			}
			c.log.WriteString(line + "\n")
			if j, found := strings.CutPrefix(line, "RESULT "); found {
				res = new(slowResult)
				if err := json.Unmarshal([]byte(j), res); err != nil {
					t.Fatalf("load client result %q: %v", j, err)
				}
			}
		case <-timeout:
			t.Fatalf("load client: no result 30s after stop:\n%s", c.log.String())
		}
	}
	return *res
}

// TestSlowLinkClientHelper is the load client of
// TestHandshakesInFlightOnASlowLink, run in the client's namespace.
func TestSlowLinkClientHelper(t *testing.T) {
	addr := os.Getenv(envSlowClient)
	if addr == "" {
		t.Skip("runs in TestHandshakesInFlightOnASlowLink's client namespace")
	}
	var (
		clients int
		stagger time.Duration
	)
	fmt.Sscan(os.Getenv(envSlowClients), &clients, &stagger)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // ends when the test closes our stdin (or dies)
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	// One request first: the link and the service work.
	probe := time.Now().Add(10 * time.Second)
	for {
		_, err := get(addr, "/")
		if err == nil {
			break
		}
		if time.Now().After(probe) || ctx.Err() != nil {
			t.Fatalf("no answer from %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("READY")
	// One load run per client, started stagger apart: clients that all
	// start at once stay in step, their handshakes all in flight at the
	// same moments, and an upgrade would meet all or none of them.
	res := slowResult{Count: map[string]int64{}, Versions: map[string]int64{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i := range clients {
		wg.Go(func() { // bounded by the run's Duration and MaxRequests
			select {
			case <-time.After(time.Duration(i) * stagger):
			case <-ctx.Done():
				return
			}
			r, err := loadgen.Run(ctx, loadgen.Config{
				Addr: addr, Mode: loadgen.NewConn, Workers: 1,
				Duration: 60 * time.Second, MaxRequests: 5_000,
			})
			if r == nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			res.add(r)
		})
	}
	wg.Wait()
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
}
