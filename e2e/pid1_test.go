package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPID1ReapsOrphans runs the supervisor as PID 1 of a PID namespace the
// test creates, as in a container, with a release whose start script
// leaves an orphan behind. The orphan is re-parented to the supervisor,
// which must reap it rather than leave a zombie; SIGTERM (what a container
// runtime sends) still stops it gracefully.
func TestPID1ReapsOrphans(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root and unshare (util-linux): %v", err)
		}
		t.Skip("needs root and unshare to create a PID namespace")
	}
	rel := filepath.Join(bins.releases, "vorphan")
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rel) })
	script := "#!/bin/sh\n( sleep 0.5 & )\nexec " + filepath.Join(bins.releases, "v1", "hello") + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(rel, "hello"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	state := filepath.Join(shortTempDir(t), "s")
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "--",
		bins.launcher, "start", "--listen", addr, "--state-dir", state, "--releases", bins.releases,
		"--", filepath.Join(rel, "hello"))
	// A file, not a pipe: Wait would also wait for the workers holding it.
	logf, err := os.Create(filepath.Join(filepath.Dir(state), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	log := fileLog{logf.Name()}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var sup int
	t.Cleanup(func() {
		// Killing PID 1 of the namespace kills every process in it.
		if sup > 0 {
			syscall.Kill(sup, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("log:\n%s", log)
		}
	})

	// The supervisor is unshare's child: PID 1 inside, some pid outside.
	eventually(t, 10*time.Second, "supervisor started", func() error {
		kids := children(cmd.Process.Pid)
		if len(kids) == 0 {
			return fmt.Errorf("no child of unshare yet")
		}
		sup = kids[0]
		return nil
	})
	sawOrphan := false
	eventually(t, 10*time.Second, "service answers", func() error {
		for _, c := range children(sup) {
			if comm(c) == "sleep" {
				sawOrphan = true
			}
		}
		if b, err := get(addr, "/"); err != nil || b != "hello from v1" {
			return fmt.Errorf("got %q, %v", b, err)
		}
		return nil
	})
	if !strings.Contains(log.String(), "running as PID 1") {
		t.Errorf("supervisor did not see itself as PID 1:\n%s", log)
	}
	eventually(t, 5*time.Second, "orphan reaped", func() error {
		for _, c := range children(sup) {
			if c2 := comm(c); c2 == "sleep" {
				sawOrphan = true
				return fmt.Errorf("orphan sleep %d still there (state %s)", c, state1(c))
			}
		}
		return nil
	})
	if !sawOrphan {
		t.Log("the orphan exited before it could be seen; reaping checked by its absence only")
	}
	if err := syscall.Kill(sup, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("supervisor as PID 1 did not stop on SIGTERM")
	}
	if !strings.Contains(log.String(), "msg=stopped") {
		t.Errorf("no graceful stop in the log:\n%s", log)
	}
}

// fileLog reads a log file when printed.
type fileLog struct{ path string }

func (f fileLog) String() string {
	b, _ := os.ReadFile(f.path)
	return string(b)
}

// children lists the pids whose parent is pid.
func children(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		end := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[end+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			c, _ := strconv.Atoi(strings.Fields(s)[0])
			out = append(out, c)
		}
	}
	return out
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

func state1(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	s := string(b)
	if end := strings.LastIndexByte(s, ')'); end >= 0 && len(s) > end+2 {
		return s[end+2 : end+3]
	}
	return "?"
}
