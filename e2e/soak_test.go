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
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/loadgen"
)

// TestSoakUpgradesWithFaults performs 50 upgrades under continuous load,
// about a third of them to a faulty release (exits before ready, never
// ready, not executable, out of --releases, its workers SIGKILLed once it
// serves on probation), and SIGKILLs the supervisor three times (once in
// the middle of an upgrade that hangs), each time starting a new one that
// adopts the workers. Then it checks: no failed request except those a crash in
// probation takes itself, no process of a finished generation left, the
// supervisor's descriptors, memory and state directory back where they
// were.
func TestSoakUpgradesWithFaults(t *testing.T) {
	const upgrades = 50
	addRelease(t, "vexit", `echo "fatal: soak fault" >&2; exit 2`)
	addRelease(t, "vhang", `exec sleep 60`)
	addRelease(t, "vnoexec", `exit 0`)
	os.Chmod(filepath.Join(bins.releases, "vnoexec", "hello"), 0o644)
	// v2 under another name: the test kills its workers once it is seen
	// serving on probation (crashLate), rather than after a fixed time.
	addRelease(t, "vcrashlate", "exec "+filepath.Join(bins.releases, "v2", "hello")+` "$@"`)
	flags := []string{"--workers", "2", "--ready-timeout", "2s"} // race-built hello on a loaded 2-core machine can take over 1 s
	s := startSup(t, flags...)

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

	// The supervisor is killed before upgrades 7, 19 (while an upgrade to
	// a release that never gets ready is under way) and 28; leaks are
	// measured from upgrade 30 on, in the last supervisor.
	kills := map[int]bool{7: true, 19: true, 28: true}
	crashAt := map[int]bool{4: true, 16: true, 25: true, 37: true, 46: true}
	const baseline = 30
	rng := rand.New(rand.NewPCG(1, 2))
	var seen []int // every worker pid ever seen
	var fdsAtBase, rssAtBase, supPID int
	var crashWindows [][2]time.Time // when a crash in probation may take requests
	good, faults, crashes := 0, 0, 0
	version := "v1"
	remember := func() {
		for _, g := range s.status().Generations {
			seen = append(seen, g.PIDs...)
		}
	}
	for i := 0; i < upgrades; i++ {
		remember()
		if kills[i] {
			hanging := make(chan struct{})
			if i == 19 {
				go func() { defer close(hanging); s.cli("upgrade", "vhang") }()
				time.Sleep(300 * time.Millisecond)
				remember()
			} else {
				close(hanging)
			}
			s.Kill()
			<-hanging
			t0 := time.Now()
			s = startSupAt(t, s.addr, s.stateDir, flags...)
			remember()
			t.Logf("supervisor killed before upgrade %d; a new one adopted the workers in %s", i, time.Since(t0))
		}
		if i == baseline {
			supPID = s.status().PID
			fdsAtBase, rssAtBase = countFDs(t, supPID), rssKB(t, supPID)
		}
		target := map[string]string{"v1": "v2", "v2": "v1"}[version]
		fault := ""
		if rng.IntN(3) == 0 {
			fault = []string{"vexit", "vhang", "vnoexec", "../../bin/sh"}[rng.IntN(4)]
		}
		if crashAt[i] {
			fault = "vcrashlate"
		}

		t0 := time.Now()
		switch fault {
		case "":
			if _, errOut, code := s.cli("upgrade", target); code != 0 {
				t.Fatalf("upgrade %d to %s: %s", i, target, errOut)
			}
			version = target
			good++
		case "vcrashlate":
			start := time.Now()
			errOut, code := s.crashLate(fault)
			crashWindows = append(crashWindows, [2]time.Time{start, time.Now().Add(500 * time.Millisecond)})
			if code == 0 || !strings.Contains(errOut, "crashed during its probation") {
				t.Fatalf("upgrade %d to %s: exit %d, %q; want a rollback", i, fault, code, errOut)
			}
			crashes++
		default:
			if _, _, code := s.cli("upgrade", fault); code == 0 {
				t.Fatalf("upgrade %d to faulty %s succeeded", i, fault)
			}
			faults++
		}
		if d := time.Since(t0); d > time.Second {
			t.Logf("upgrade %d (%q) took %s", i, fault, d)
		}
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()

	var total, taken int64
	inCrash := func(at time.Time) bool {
		for _, w := range crashWindows {
			if !at.Before(w[0]) && !at.After(w[1]) {
				return true
			}
		}
		return false
	}
	for i, r := range results {
		if r == nil {
			t.Fatalf("%s load did not run", cfgs[i].Mode)
		}
		total += r.Requests
		var other int64
		for rec := range r.Records() {
			if !rec.Class.Failed() {
				continue
			}
			if inCrash(r.Start.Add(rec.Start + rec.Latency)) {
				taken++
			} else {
				other++
			}
		}
		if other > 0 {
			t.Errorf("%s: %d of %d requests failed outside a crash in probation: %v", cfgs[i].Mode, other, r.Requests, r.Samples)
		}
	}
	t.Logf("%d upgrades (%d good, %d to releases refused or failing before ready, %d crashing in probation), 3 supervisor kills; %d requests, %d taken by the crashes, 0 other failures",
		upgrades, good, faults, crashes, total, taken)

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
	// State dir: one admin socket per live worker.
	eventually(t, 10*time.Second, "one admin socket per live worker", func() error {
		ents, _ := os.ReadDir(filepath.Join(s.stateDir, "admin"))
		if len(ents) != len(s.status().Generations[len(s.status().Generations)-1].PIDs) && len(ents) != len(active.PIDs) {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			return fmt.Errorf("admin sockets %v; want %d", names, len(active.PIDs))
		}
		return nil
	})
	fds, rss := countFDs(t, supPID), rssKB(t, supPID)
	t.Logf("last supervisor after upgrade %d: %d fds, %d kB RSS; after %d: %d fds, %d kB", baseline, fdsAtBase, rssAtBase, upgrades, fds, rss)
	if fds > fdsAtBase+4 {
		t.Errorf("supervisor descriptors grew from %d to %d", fdsAtBase, fds)
	}
	if rss > rssAtBase*3/2+4096 {
		t.Errorf("supervisor RSS grew from %d kB to %d kB", rssAtBase, rss)
	}
}

// crashLate runs `upgrade --wait version` and, once the new generation
// serves on its probation (the previous one standing by), SIGKILLs its
// workers; it returns the upgrade's stderr and exit status.
func (s *sup) crashLate(version string) (errOut string, code int) {
	s.t.Helper()
	type result struct {
		errOut string
		code   int
	}
	done := make(chan result, 1)
	go func() { // ends with the CLI, within runCLI's 60 s
		_, errOut, code := s.cli("upgrade", "--wait", version)
		done <- result{errOut, code}
	}()
	var pids []int
	deadline := time.After(30 * time.Second)
	for pids == nil {
		select {
		case r := <-done:
			s.t.Fatalf("upgrade --wait %s ended (exit %d, %q) before it was seen on probation", version, r.code, r.errOut)
		case <-deadline:
			s.t.Fatalf("generation of %s not seen on probation within 30s", version)
		case <-time.After(10 * time.Millisecond):
		}
		if g := activeGen(s.status()); g != nil && g.Version == version && g.ProbationUntil != nil {
			pids = g.PIDs
		}
	}
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
			s.t.Fatalf("kill worker %d of %s: %v", p, version, err)
		}
	}
	r := <-done
	return r.errOut, r.code
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
