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

// TestReapsOrphans: with a release whose start script leaves an orphan
// behind, the orphan is re-parented to the supervisor, which must reap it
// rather than leave a zombie; SIGTERM still stops it gracefully. Once as
// PID 1 of a PID namespace the test creates, as in a container; once as
// an ordinary process, a child subreaper (PR_SET_CHILD_SUBREAPER), where
// without it the orphan would go to init.
func TestReapsOrphans(t *testing.T) {
	rel := filepath.Join(bins.releases, "vorphan")
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(rel) })
	script := "#!/bin/sh\n( sleep 0.5 & )\nexec " + filepath.Join(bins.releases, "v1", "hello") + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(rel, "hello"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		pidNS   bool   // run as PID 1 of a new PID namespace
		wantLog string // what the supervisor says of its role
	}{
		{"pid 1 in a container", true, "running as PID 1"},
		{"child subreaper", false, "child subreaper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var wrap []string
			if tt.pidNS {
				unshare, err := exec.LookPath("unshare")
				if err != nil || os.Getuid() != 0 {
					if os.Getenv("CI") == "true" {
						t.Fatalf("needs root and unshare (util-linux): %v", err)
					}
					t.Skip("needs root and unshare to create a PID namespace")
				}
				wrap = []string{unshare, "--pid", "--fork", "--mount-proc", "--"}
			}
			addr := freeAddr(t)
			state := filepath.Join(shortTempDir(t), "s")
			argv := append(wrap, bins.launcher, "start", "--listen", addr, "--state-dir", state, "--releases", bins.releases,
				"--", filepath.Join(rel, "hello"))
			cmd := exec.Command(argv[0], argv[1:]...)
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
			var exit error                                 // cmd's, once done is closed
			go func() { exit = cmd.Wait(); close(done) }() // ends when the supervisor (or unshare) is reaped
			var sup int
			t.Cleanup(func() {
				// Killing PID 1 of the namespace kills every process in it;
				// otherwise its workers go first.
				if sup > 0 {
					if !tt.pidNS {
						for _, c := range children(sup) {
							syscall.Kill(c, syscall.SIGKILL)
						}
					}
					syscall.Kill(sup, syscall.SIGKILL)
				}
				cmd.Process.Kill()
				<-done
				noRace(t, "the supervisor or its workers", []byte(log.String()), exit)
				if t.Failed() {
					t.Logf("log:\n%s", log)
				}
			})

			if tt.pidNS {
				// The supervisor is unshare's child: PID 1 inside, some pid outside.
				eventually(t, 10*time.Second, "supervisor started", func() error {
					kids := children(cmd.Process.Pid)
					if len(kids) == 0 {
						return fmt.Errorf("no child of unshare yet")
					}
					sup = kids[0]
					return nil
				})
			} else {
				sup = cmd.Process.Pid
			}
			// The orphan lives 0.5s: it must show up as the supervisor's
			// child (outside a PID namespace only a subreaper gets it).
			eventually(t, 10*time.Second, "orphan re-parented to the supervisor", func() error {
				for _, c := range children(sup) {
					if comm(c) == "sleep" {
						return nil
					}
				}
				return fmt.Errorf("no orphan among the children of %d", sup)
			})
			// The orphan comes from the start script, before hello runs.
			eventually(t, 10*time.Second, "hello serves", func() error {
				if b, err := get(addr, "/"); err != nil || b != "hello from v1" {
					return fmt.Errorf("GET / = %q, %v", b, err)
				}
				return nil
			})
			if !strings.Contains(log.String(), tt.wantLog) {
				t.Errorf("supervisor log lacks %q:\n%s", tt.wantLog, log)
			}
			eventually(t, 5*time.Second, "orphan reaped", func() error {
				for _, c := range children(sup) {
					if c2 := comm(c); c2 == "sleep" {
						return fmt.Errorf("orphan sleep %d still there (state %s)", c, state1(c))
					}
				}
				return nil
			})
			if err := syscall.Kill(sup, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("supervisor did not stop on SIGTERM")
			}
			if !strings.Contains(log.String(), "msg=stopped") {
				t.Errorf("no graceful stop in the log:\n%s", log)
			}
		})
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
