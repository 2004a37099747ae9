package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
)

// TestSoakUpgradesWithFaults performs 50 upgrades under continuous load,
// a third of them to a faulty release (exits before ready, never ready,
// not executable, out of --releases), and then checks: no failed request,
// no process of a finished generation left, the supervisor's descriptors,
// memory and state directory back where they were.
func TestSoakUpgradesWithFaults(t *testing.T) {
	const upgrades = 50
	addRelease(t, "vexit", `echo "fatal: soak fault" >&2; exit 2`)
	addRelease(t, "vhang", `exec sleep 60`)
	addRelease(t, "vnoexec", `exit 0`)
	os.Chmod(filepath.Join(bins.releases, "vnoexec", "hello"), 0o644)
	s := startSup(t, "--workers", "2", "--ready-timeout", "700ms")
	supPID := s.status().PID

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	loadCtx, stopLoad := context.WithCancel(ctx)
	cfgs := []loadgen.Config{
		{Addr: s.addr, Mode: loadgen.KeepAlive, Method: "POST", Workers: 6, Duration: 2 * time.Minute, MaxRequests: 5_000_000},
		{Addr: s.addr, Mode: loadgen.NewConn, Workers: 3, Duration: 2 * time.Minute, MaxRequests: 5_000_000},
	}
	results := make([]*loadgen.Result, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], _ = loadgen.Run(loadCtx, cfg) }()
	}

	rng := rand.New(rand.NewPCG(1, 2))
	var seen []int // every worker pid ever seen
	var fdsAt10, rssAt10 int
	good, faults := 0, 0
	version := "v1"
	for i := 0; i < upgrades; i++ {
		for _, g := range s.status().Generations {
			seen = append(seen, g.PIDs...)
		}
		if i == 10 {
			fdsAt10, rssAt10 = countFDs(t, supPID), rssKB(t, supPID)
		}
		target := map[string]string{"v1": "v2", "v2": "v1"}[version]
		fault := ""
		if rng.IntN(3) == 0 {
			fault = []string{"vexit", "vhang", "vnoexec", "../../bin/sh"}[rng.IntN(4)]
		}
		if fault != "" {
			if _, _, code := s.cli("upgrade", fault); code == 0 {
				t.Fatalf("upgrade %d to faulty %s succeeded", i, fault)
			}
			faults++
			continue
		}
		if _, errOut, code := s.cli("upgrade", target); code != 0 {
			t.Fatalf("upgrade %d to %s: %s", i, target, errOut)
		}
		version = target
		good++
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()

	var total int64
	for i, r := range results {
		if r == nil {
			t.Fatalf("%s load did not run", cfgs[i].Mode)
		}
		total += r.Requests
		if r.Failures() > 0 {
			t.Errorf("%s: %d of %d requests failed: %v", cfgs[i].Mode, r.Failures(), r.Requests, r.Samples)
		}
	}
	t.Logf("%d upgrades (%d good, %d faulty), %d requests", upgrades, good, faults, total)

	// Only the active generation's processes are left.
	st := s.status()
	active := activeGen(st)
	live := map[int]bool{}
	for _, p := range active.PIDs {
		live[p] = true
	}
	eventually(t, 10*time.Second, "finished generations' processes gone", func() error {
		for _, p := range seen {
			if !live[p] && alive(p) {
				return fmt.Errorf("pid %d of a finished generation alive", p)
			}
		}
		return nil
	})
	// State dir: the lock, pid file, socket, and one admin socket per live worker.
	ents, _ := os.ReadDir(filepath.Join(s.stateDir, "admin"))
	if len(ents) != len(active.PIDs) {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("admin sockets %v; want %d, one per live worker", names, len(active.PIDs))
	}
	fds, rss := countFDs(t, supPID), rssKB(t, supPID)
	t.Logf("supervisor after 10 upgrades: %d fds, %d kB RSS; after %d: %d fds, %d kB", fdsAt10, rssAt10, upgrades, fds, rss)
	if fds > fdsAt10+4 {
		t.Errorf("supervisor descriptors grew from %d to %d", fdsAt10, fds)
	}
	if rss > rssAt10*3/2+4096 {
		t.Errorf("supervisor RSS grew from %d kB to %d kB", rssAt10, rss)
	}
}

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}
