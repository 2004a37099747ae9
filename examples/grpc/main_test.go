package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/launcherd/launcher/internal/rig"
)

// TestUpgradesUnderGRPC runs the example under a real supervisor (two
// workers, no probation), with unary callers that never retry and one
// server stream started before the upgrades, and upgrades it three times.
// Every call must succeed; the stream must end well on the generation it
// started on (each message names its generation); the supervisor's
// launcher_requests_total must count every call, the exited generations'
// included.
func TestUpgradesUnderGRPC(t *testing.T) {
	sup := startSup(t, "--workers", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr, maddr := sup.addr, sup.maddr

	// One server stream over the upgrades: 100 messages, 10 s. The three
	// upgrades and their pauses take 2–4 s here (-race, a loaded machine).
	const streamLen = 100
	type streamResult struct {
		msgs []string
		err  error
		end  time.Time
	}
	streamDone := make(chan streamResult, 1)
	sconn := dial(t, addr)
	stream, err := sconn.NewStream(ctx, &EchoDesc.Streams[0], MethodCount)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(wrapperspb.UInt32(streamLen)); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	go func() { // ends with the stream, bounded by ctx
		var r streamResult
		for {
			m := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(m); err != nil {
				if !errors.Is(err, io.EOF) {
					r.err = err
				}
				break
			}
			r.msgs = append(r.msgs, m.GetValue())
		}
		r.end = time.Now()
		streamDone <- r
	}()

	// Unary callers, each with its own connection, until stop (at most
	// 20,000 calls each).
	var (
		calls, failed atomic.Int64
		mu            sync.Mutex
		byGen         = map[int]int{}
		firstErr      error
		wg            sync.WaitGroup
	)
	stop := make(chan struct{})
	for c := range 4 {
		conn := dial(t, addr)
		wg.Add(1)
		go func() { // ends at stop, or after 20,000 calls
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				out := new(wrapperspb.StringValue)
				err := conn.Invoke(cctx, MethodSay, wrapperspb.String(fmt.Sprint(c, i)), out)
				ccancel()
				calls.Add(1)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					byGen[generationOf(t, out.GetValue())]++
				}
				mu.Unlock()
			}
		}()
	}

	time.Sleep(500 * time.Millisecond)
	for _, v := range []string{"v2", "v3", "v4"} {
		sup.upgrade(t, v)
		time.Sleep(300 * time.Millisecond)
	}
	upgraded := time.Now()
	// Generation 1 drains with the stream's connection open, counted by
	// its drain.Listener.
	if n := sumMetric(t, maddr, "launcher_open_connections", `generation="1"`); n < 1 {
		t.Errorf("launcher_open_connections{generation=\"1\"} = %d while its stream runs; want at least 1", n)
	}
	close(stop)
	wg.Wait()

	mu.Lock()
	t.Logf("%d unary calls, %d failed; answered by generation: %v", calls.Load(), failed.Load(), byGen)
	if failed.Load() != 0 {
		t.Errorf("%d of %d calls failed; first: %v", failed.Load(), calls.Load(), firstErr)
	}
	if byGen[1] == 0 || byGen[4] == 0 {
		t.Errorf("calls by generation %v: want some on the first (1) and the last (4)", byGen)
	}
	mu.Unlock()

	r := <-streamDone
	if r.err != nil {
		t.Errorf("stream: %v after %d messages", r.err, len(r.msgs))
	}
	if len(r.msgs) != streamLen {
		t.Errorf("stream: %d messages; want %d", len(r.msgs), streamLen)
	}
	for i, m := range r.msgs {
		if want := fmt.Sprintf("generation 1: %d", i); m != want {
			t.Errorf("stream message %d = %q; want %q", i, m, want)
			break
		}
	}
	if !r.end.After(upgraded) {
		t.Errorf("the stream ended %s before the last upgrade: it did not span them", upgraded.Sub(r.end))
	}

	// Every call, and the stream, is in launcher_requests_total{code="200"}
	// once generation 1 has exited and its final counts are collected.
	want := calls.Load() + 1
	var got int64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = sumMetric(t, maddr, "launcher_requests_total", `code="200"`); got == want {
			break
		}
	}
	if got != want {
		t.Errorf("launcher_requests_total{code=\"200\"} = %d; want %d (the calls and the stream)", got, want)
	}
}

// bins are built once for all tests by TestMain.
var bins struct {
	launcher, releases string
}

func TestMain(m *testing.M) {
	// Every process the tests start inherits it (workers their
	// supervisor's): a data race ends the process with status 66 after
	// its report, which fails the test (see startSup).
	os.Setenv("GORACE", rig.GORACE)
	dir, err := os.MkdirTemp("", "launcher-grpc-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := buildAll(dir, "v1", "v2", "v3", "v4"); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildAll builds the launcher (from the repository's root) and this
// example, with -race, and installs the example as each release.
func buildAll(dir string, versions ...string) error {
	bins.launcher, bins.releases = filepath.Join(dir, "launcher"), filepath.Join(dir, "releases")
	echoBin := filepath.Join(dir, "echo")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, b := range []struct{ dir, out, pkg string }{
		{"../..", bins.launcher, "./cmd/launcher"},
		{".", echoBin, "."},
	} {
		wg.Add(1)
		go func() { // ends with go build
			defer wg.Done()
			cmd := exec.Command("go", "build", "-race", "-o", b.out, b.pkg)
			cmd.Dir = b.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	bin, err := os.ReadFile(echoBin)
	if err != nil {
		return err
	}
	for _, v := range versions {
		if err := os.MkdirAll(filepath.Join(bins.releases, v), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(bins.releases, v, "echo"), bin, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// sup is a running launcher start of release v1, with no probation.
type sup struct {
	*rig.Proc
	addr, maddr string // the service's and the supervisor's /metrics
}

// startSup starts a supervisor with extra flags and waits until it
// serves. The cleanup stops it, kills what is left of its workers, and
// fails the test on a data race.
func startSup(t *testing.T, flags ...string) *sup {
	t.Helper()
	state, err := os.MkdirTemp("", "lg") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	s := &sup{addr: freeAddr(t), maddr: freeAddr(t)}
	log := &rig.LogBuffer{}
	args := append([]string{bins.launcher, "start", "--listen", s.addr, "--state-dir", state,
		"--releases", bins.releases, "--probation", "0", "--metrics", s.maddr}, flags...)
	args = append(args, "--", filepath.Join(bins.releases, "v1", "echo"))
	s.Proc, err = rig.StartProc(context.Background(), args, nil, state, log)
	if err != nil {
		os.RemoveAll(state)
		t.Fatalf("%v\n%s", err, log)
	}
	t.Cleanup(func() {
		s.Shutdown(15 * time.Second) // kills every worker it saw, too
		if r := s.RaceReport(); r != "" {
			t.Errorf("data race in the supervisor or its workers:\n%s", r)
		}
		if t.Failed() {
			t.Logf("supervisor log:\n%s", log)
		}
		os.RemoveAll(state)
	})
	return s
}

// upgrade runs launcher upgrade VERSION, which returns once the new
// generation serves, and remembers the new workers for the cleanup.
func (s *sup) upgrade(t *testing.T, version string) {
	t.Helper()
	start := time.Now()
	out, err := exec.Command(bins.launcher, "upgrade", "--state-dir", s.StateDir, version).CombinedOutput()
	if err != nil {
		t.Fatalf("upgrade %s: %v\n%s", version, err, out)
	}
	t.Logf("upgrade to %s: serving after %s", version, time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Status(ctx)
}

// dial returns a client that never retries a call (retries off; a call
// made while no connection is ready fails rather than waits, as
// WaitForReady is false by default). grpc-go still replays a call the
// server's GOAWAY says it never processed: that is the protocol, not a
// retry.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// generationOf reads G from "generation G: ...".
func generationOf(t *testing.T, s string) int {
	rest, ok := strings.CutPrefix(s, "generation ")
	g, _, _ := strings.Cut(rest, ":")
	n, err := strconv.Atoi(g)
	if !ok || err != nil {
		t.Errorf("answer %q names no generation", s)
	}
	return n
}

// sumMetric sums the series of name whose labels contain label on the
// supervisor's /metrics at addr.
func sumMetric(t *testing.T, addr, name, label string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") || !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += int64(v)
	}
	return sum
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := rig.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestDrainCutReported: a stream still running at --drain-timeout is cut
// by Stop, and the example reports it with Drained: the supervisor counts
// it in launcher_drain_cut_requests_total.
func TestDrainCutReported(t *testing.T) {
	sup := startSup(t, "--drain-timeout", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := dial(t, sup.addr).NewStream(ctx, &EchoDesc.Streams[0], MethodCount)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(wrapperspb.UInt32(300)); err != nil { // 30 s
		t.Fatal(err)
	}
	stream.CloseSend()
	if err := stream.RecvMsg(new(wrapperspb.StringValue)); err != nil {
		t.Fatal(err)
	}
	sup.upgrade(t, "v2")
	start := time.Now()
	for {
		if err = stream.RecvMsg(new(wrapperspb.StringValue)); err != nil {
			break
		}
	}
	t.Logf("stream ended %s after the upgrade: %v", time.Since(start).Round(time.Millisecond), err)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the stream was cut %s after the upgrade; want about the 1s drain timeout", took.Round(time.Millisecond))
	}
	var got int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = sumMetric(t, sup.maddr, "launcher_drain_cut_requests_total", ""); got == 1 {
			break
		}
	}
	if got != 1 {
		t.Errorf("launcher_drain_cut_requests_total = %d; want 1 (the stream)", got)
	}
}
