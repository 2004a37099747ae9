package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
	"github.com/launcherd/launcher/supervisor"
)

// TestHostileControlClients: oversized, malformed, wrong-version and silent
// clients of the control socket are dropped, and the supervisor keeps
// answering the CLI meanwhile.
func TestHostileControlClients(t *testing.T) {
	// Parallel (see TestMetricsPerGeneration): it mostly waits for the
	// 5 s hello deadline, on a state dir of its own.
	t.Parallel()
	s := startSup(t)
	sock := filepath.Join(s.stateDir, "control.sock")
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// answer reads what the supervisor sends before closing (bounded).
	answer := func(c net.Conn, within time.Duration) (string, bool) {
		c.SetReadDeadline(time.Now().Add(within))
		line, err := bufio.NewReader(c).ReadString('\n')
		closed := err != nil && !isTimeout(err)
		if err == nil {
			// The supervisor answered; it must close right after.
			_, err2 := c.Read(make([]byte, 1))
			closed = err2 != nil && !isTimeout(err2)
		}
		return line, closed
	}

	silent := dial() // says nothing: dropped after the 5 s hello deadline
	half := dial()   // a line that never ends
	half.Write([]byte(`{"type":"hello","v":1,"role":"cli`))

	tests := []struct {
		name string
		send []byte
		want string
	}{
		{"oversized line", append([]byte(`{"type":"hello","text":"`), []byte(strings.Repeat("x", 200<<10))...), ""},
		{"not json", []byte("GET / HTTP/1.1\r\n\r\n"), ""},
		{"wrong version", []byte(`{"type":"hello","v":99,"role":"client","cmd":"stop"}` + "\n"), "protocol: want hello version 2"},
		{"unknown role", []byte(`{"type":"hello","v":1,"role":"admin","cmd":"stop"}` + "\n"), "unknown role"},
		{"forged worker", []byte(`{"type":"hello","v":1,"role":"worker","token":"guess"}` + "\n"), "unknown worker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write(tt.send) // may fail once the supervisor hangs up: that is the point
			line, closed := answer(c, 3*time.Second)
			if !closed {
				t.Errorf("connection still open after %s", tt.name)
			}
			if tt.want != "" && !strings.Contains(line, tt.want) {
				t.Errorf("answer %q lacks %q", line, tt.want)
			}
			// The supervisor still serves the CLI and the service.
			if _, errOut, code := s.cli("status"); code != 0 {
				t.Fatalf("status after %s: %s", tt.name, errOut)
			}
		})
	}
	// The silent and half-line clients are dropped at the hello deadline,
	// and nothing was stopped by any of the above.
	for name, c := range map[string]net.Conn{"silent": silent, "half line": half} {
		if _, closed := answer(c, 8*time.Second); !closed {
			t.Errorf("%s client not dropped after the hello deadline", name)
		}
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
		t.Errorf("service after hostile clients: %q", b)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestControlRefusesOtherUsers: a client of another uid is refused by the
// peer-credential check even when file permissions would let it in.
func TestControlRefusesOtherUsers(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil || os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs root and setpriv (util-linux): %v", err)
		}
		t.Skip("needs root and setpriv")
	}
	s := startSup(t)
	// Open the test's own state dir and socket to everyone, so that only
	// SO_PEERCRED stands in the way. (The supervisor makes them 0700/0600.)
	st, _ := os.Stat(s.stateDir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v; want 0700", st.Mode().Perm())
	}
	sock := filepath.Join(s.stateDir, "control.sock")
	if st, _ := os.Stat(sock); st.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v; want 0600", st.Mode().Perm())
	}
	for _, p := range []string{filepath.Dir(s.stateDir), s.stateDir} {
		os.Chmod(p, 0o755)
	}
	os.Chmod(sock, 0o666)
	os.Chmod(bins.dir, 0o755)
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		bins.launcher, "stop", "--state-dir", s.stateDir).CombinedOutput()
	noRace(t, "launcher stop as uid 65534", out, err)
	if err == nil || !strings.Contains(string(out), "refused: uid 65534 is not allowed") {
		t.Errorf("stop as uid 65534: %v, %q; want refused", err, out)
	}
	if b := mustGet(t, s.addr, "/"); b != "hello from v1" {
		t.Errorf("service after the refused stop: %q", b)
	}
}

// TestWorkersInheritNoDescriptors: apart from stdin, stdout and stderr, a
// worker shares no socket with the supervisor (control listener, metrics
// listener, its side of other workers' connections) and holds none of its
// state-dir files (the lock file above all: a worker holding it would keep
// a new supervisor from starting after a crash).
func TestWorkersInheritNoDescriptors(t *testing.T) {
	s := startSup(t, "--workers", "2", "--metrics", freeAddr(t))
	st := s.status()
	fds := func(pid int, skipStd bool) map[string]int {
		t.Helper()
		out := map[string]int{}
		ents, err := os.ReadDir("/proc/" + itoa(pid) + "/fd")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if skipStd && (e.Name() == "0" || e.Name() == "1" || e.Name() == "2") {
				continue
			}
			link, err := os.Readlink("/proc/" + itoa(pid) + "/fd/" + e.Name())
			// A socket's name is its inode: the same name in two processes
			// is one inherited socket. Files are compared by path only for
			// the supervisor's own (the Go runtime opens cgroup files and
			// /dev/null in every process).
			if err != nil || !(strings.HasPrefix(link, "socket:") || strings.HasPrefix(link, s.stateDir)) {
				continue
			}
			out[link] = pid
		}
		return out
	}
	sup := fds(st.PID, false)
	if len(sup) == 0 {
		t.Fatal("read no descriptor of the supervisor")
	}
	for _, pid := range activeGen(st).PIDs {
		for link := range fds(pid, true) {
			if _, shared := sup[link]; shared {
				t.Errorf("worker %d shares %s with the supervisor", pid, link)
			}
			if strings.Contains(link, "launcher.lock") {
				t.Errorf("worker %d holds the supervisor's lock file", pid)
			}
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestCommandsOfClientsThatGaveUpAreDropped: commands sent while the
// supervisor is stopped (SIGSTOP), whose clients gave up and closed their
// connections, are dropped when it runs again, with a log line, not
// carried out (a new user's trial: of three queued so, the last ran and
// the others vanished without a trace, after each client had said it
// failed).
func TestCommandsOfClientsThatGaveUpAreDropped(t *testing.T) {
	s := startSup(t, "--probation", "0")
	before := activeGen(s.status())
	// Stopped for sure before the commands go out: a supervisor not yet
	// stopped read the first and carried it out (once, on a loaded
	// machine).
	stopProc(t, s.Pid())
	resumed := false
	defer func() {
		if !resumed {
			syscall.Kill(s.Pid(), syscall.SIGCONT)
		}
	}()
	for _, v := range []string{"v2", "v1"} {
		c, err := net.Dial("unix", supervisor.ControlSocket(s.stateDir)) // queued by the kernel
		if err != nil {
			t.Fatal(err)
		}
		hello := control.Message{Type: control.TypeHello, Version: control.Version, Role: control.RoleClient, Cmd: "upgrade", Arg: v}
		if err := control.NewConn(c).Write(hello); err != nil {
			t.Fatal(err)
		}
		c.Close() // as a client that gave up waiting does
	}
	if err := syscall.Kill(s.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	eventually(t, 5*time.Second, "both commands dropped", func() error {
		if n := strings.Count(s.log.String(), "command dropped: its client gave up before it was read"); n != 2 {
			return fmt.Errorf("%d dropped", n)
		}
		return nil
	})
	if g := activeGen(s.status()); g == nil || g.Generation != before.Generation || len(s.status().Generations) != 1 {
		t.Errorf("after the dropped commands: %+v; want generation %d alone", s.status().Generations, before.Generation)
	}
}
