package supervisor

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCgroupName(t *testing.T) {
	tests := []struct{ dir, wantPrefix string }{
		{"/run/launcher/hello", "launcher-hello-"},
		{"/tmp/a b/state dir", "launcher-state_dir-"},
		{"/srv/" + strings.Repeat("x", 60), "launcher-" + strings.Repeat("x", 32) + "-"},
	}
	for _, tt := range tests {
		got := cgroupName(tt.dir)
		if !strings.HasPrefix(got, tt.wantPrefix) || len(got) != len(tt.wantPrefix)+8 {
			t.Errorf("cgroupName(%q) = %q; want %s and 8 hex digits", tt.dir, got, tt.wantPrefix)
		}
	}
	if cgroupName("/run/launcher/a/hello") == cgroupName("/run/launcher/b/hello") {
		t.Error("two state dirs of the same name share a cgroup")
	}
}

func TestWorkerCgroupRE(t *testing.T) {
	tests := []struct {
		path    string
		wantGen string // "" if not a worker's cgroup
	}{
		{"/launcher-hello-0a1b2c3d/gen-7/worker-0", "7"},
		{"/system.slice/launcher@hello.service/launcher-hello-0a1b2c3d/gen-12/worker-3.1", "12"},
		{"/launcher-hello-0a1b2c3d/gen-7", ""},
		{"/user.slice/user-0.slice/session-1.scope", ""},
		{"/launcher-x/gen-7/worker-0/nested", ""},
		{"/gen-7/worker-0", ""},
	}
	for _, tt := range tests {
		m := workerCgroupRE().FindStringSubmatch(tt.path)
		got := ""
		if m != nil {
			got = m[1]
		}
		if got != tt.wantGen {
			t.Errorf("%s: generation %q; want %q", tt.path, got, tt.wantGen)
		}
	}
}

func TestCgroupFiles(t *testing.T) {
	stat := "usage_usec 1488148\nuser_usec 408056\nsystem_usec 1080091\n"
	if n, ok := statField(stat, "usage_usec"); !ok || n != 1488148 {
		t.Errorf("usage_usec = %d, %v; want 1488148", n, ok)
	}
	if _, ok := statField(stat, "nice_usec"); ok {
		t.Error("nice_usec found in a cpu.stat without it")
	}
	if got := unescapeMount(`/sys/fs/cgroup\040v2`); got != "/sys/fs/cgroup v2" {
		t.Errorf("unescapeMount = %q", got)
	}
}

// TestTreesOnThisKernel starts a shell that leaves a child in the
// background and runs another in the foreground, kills it as a worker is
// killed, and checks that nothing of it is left: in a cgroup where this
// test may create one (root), and in a process group.
func TestTreesOnThisKernel(t *testing.T) {
	for _, groups := range []bool{false, true} {
		name := map[bool]string{false: "cgroup", true: "process group"}[groups]
		t.Run(name, func(t *testing.T) {
			var logs logBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			state := filepath.Join(t.TempDir(), "state")
			cg := openCgroups(state, groups, log)
			defer cg.close()
			if !groups && cg.base == "" {
				t.Skipf("no cgroup this test may create: %s", logs.String())
			}
			fx := &osEffects{cg: cg, log: log}
			p, err := fx.start(procSpec{gen: 1, index: 0, path: "/bin/sh", args: []string{"-c", "sleep 300 & sleep 300"}, tail: newTailBuffer(5)})
			if err != nil {
				t.Fatal(err)
			}
			var kids []int
			if err := waitFor(5*time.Second, func() bool {
				kids = childrenOf(p.pid())
				return len(kids) == 2
			}); err != nil {
				t.Fatalf("children of the shell: %v", kids)
			}
			dir := ""
			if !groups {
				rel, _ := cgroupOf(p.pid())
				dir = filepath.Join(cg.mount, rel)
				if want := filepath.Join(cg.base, "gen-1", "worker-0"); dir != want {
					t.Errorf("worker in cgroup %s; want %s", dir, want)
				}
				u, ok := fx.usage(1)
				if !ok || u.MemoryBytes <= 0 {
					t.Errorf("usage = %+v, %v; want the tree's memory", u, ok)
				}
			}
			p.kill()
			select {
			case <-p.done():
			case <-time.After(10 * time.Second):
				t.Fatal("not exited 10s after kill")
			}
			for _, k := range kids {
				if _, err := os.Stat("/proc/" + strconv.Itoa(k) + "/stat"); err == nil && !zombie(k) {
					t.Errorf("child %d of the killed worker left", k)
				}
			}
			if dir != "" {
				if _, err := os.Stat(dir); err == nil {
					t.Errorf("worker's cgroup %s left", dir)
				}
				fx.removeGeneration(1)
				if _, err := os.Stat(filepath.Dir(dir)); err == nil {
					t.Errorf("generation's cgroup %s left", filepath.Dir(dir))
				}
				cg.close()
				if _, err := os.Stat(cg.base); err == nil {
					t.Errorf("supervisor's cgroup %s left", cg.base)
				}
			}
		})
	}
}

// childrenOf returns the live children of pid.
func childrenOf(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		if c, ppid, _, state, ok := readStatGroup(path); ok && ppid == pid && state != "Z" {
			out = append(out, c)
		}
	}
	return out
}

func zombie(pid int) bool {
	_, _, _, state, ok := readStatGroup("/proc/" + strconv.Itoa(pid) + "/stat")
	return ok && state == "Z"
}

// TestStoppedOnThisKernel: a worker stopped with SIGSTOP reads stopped
// until SIGCONT, and one whose cgroup is frozen (cgroup.freeze) until it
// is thawed, though /proc calls a frozen process sleeping (a new user's
// trial froze a standby worker so, and the rollback steered back to it).
func TestStoppedOnThisKernel(t *testing.T) {
	for _, groups := range []bool{false, true} {
		name := map[bool]string{false: "cgroup", true: "process group"}[groups]
		t.Run(name, func(t *testing.T) {
			var logs logBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			cg := openCgroups(filepath.Join(t.TempDir(), "state"), groups, log)
			defer cg.close()
			if !groups && cg.base == "" {
				t.Skipf("no cgroup this test may create: %s", logs.String())
			}
			fx := &osEffects{cg: cg, log: log}
			p, err := fx.start(procSpec{gen: 1, index: 0, path: "/bin/sleep", args: []string{"300"}, tail: newTailBuffer(5)})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				p.kill()
				<-p.done()
				fx.removeGeneration(1)
			}()
			want := func(what string, stopped bool) {
				t.Helper()
				if err := waitFor(5*time.Second, func() bool { return p.stopped() == stopped }); err != nil {
					t.Errorf("%s: stopped() = %v; want %v", what, !stopped, stopped)
				}
			}
			want("running", false)
			p.signal(syscall.SIGSTOP)
			want("after SIGSTOP", true)
			p.signal(syscall.SIGCONT)
			want("after SIGCONT", false)
			if groups {
				return
			}
			rel, _ := cgroupOf(p.pid())
			freeze := filepath.Join(cg.mount, rel, "cgroup.freeze")
			if err := os.WriteFile(freeze, []byte("1"), 0); err != nil {
				t.Fatal(err)
			}
			want("frozen", true)
			if err := os.WriteFile(freeze, []byte("0"), 0); err != nil {
				t.Fatal(err)
			}
			want("thawed", false)
			// The cgroup v1 freezer, where one is mounted: its tasks read
			// D, not T (a new user's trial: a worker frozen so kept its
			// share of new connections, and a rollback steered to it).
			mnt := freezerV1Mount()
			if mnt == "" {
				t.Logf("no cgroup v1 freezer here: its case not run")
				return
			}
			dir, err := os.MkdirTemp(mnt, "launcher-test-")
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
				p.kill()
				<-p.done()
				waitFor(5*time.Second, func() bool { return os.Remove(dir) == nil })
			}()
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p.pid())), 0); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("FROZEN"), 0); err != nil {
				t.Fatal(err)
			}
			want("frozen by the v1 freezer", true)
			if err := os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0); err != nil {
				t.Fatal(err)
			}
			want("thawed by the v1 freezer", false)
		})
	}
}
