package supervisor

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/launcherd/launcher/internal/control"
)

// TestOurProcess: a pid is adopted only while it runs and carries the
// token the state file names, so a reused pid is never taken for a worker.
func TestOurProcess(t *testing.T) {
	child := exec.Command("sleep", "30")
	child.Env = append(os.Environ(), control.EnvToken+"=tok123")
	if err := child.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip("cannot run true:", err)
	}
	tests := []struct {
		name  string
		pid   int
		token string
		want  bool
	}{
		{"running, its token", child.Process.Pid, "tok123", true},
		{"running, another token", child.Process.Pid, "tok12", false},
		{"a token prefix is not the token", child.Process.Pid, "tok1234", false},
		{"no token", child.Process.Pid, "", false},
		{"not a worker", os.Getpid(), "tok123", false},
		{"gone", dead.ProcessState.Pid(), "tok123", false},
		{"no pid", 0, "tok123", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, ok := ourProcess(tt.pid, tt.token)
			if ok {
				unix.Close(fd)
			}
			if ok != tt.want {
				t.Errorf("ourProcess(%d, %q) = %v; want %v", tt.pid, tt.token, ok, tt.want)
			}
		})
	}
}

func TestLoadState(t *testing.T) {
	tests := []struct {
		name    string
		content string // "" means no file
		wantNil bool
		wantErr bool
		wantGen int
	}{
		{name: "no state file: nothing to adopt", wantNil: true},
		{name: "not JSON", content: "{", wantErr: true},
		{name: "a state", content: `{"supervisor_pid": 7, "listen": ["127.0.0.1:1"], "active_generation": 3, "last_generation": 4,
			"generations": [{"generation": 3, "release": {"version": "v2", "path": "/r/v2/app"}, "state": "active",
			"workers": [{"index": 0, "pid": 9, "token": "t", "admin": "/s/admin/g3-w0.sock", "ready": true}]}],
			"reuseport_group": ["t"]}`, wantGen: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != "" {
				if err := os.WriteFile(statePath(dir), []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			st, err := loadState(dir)
			switch {
			case tt.wantErr:
				if err == nil {
					t.Fatalf("loadState = %+v; want an error", st)
				}
			case err != nil:
				t.Fatal(err)
			case tt.wantNil != (st == nil):
				t.Fatalf("loadState = %+v; want nil %v", st, tt.wantNil)
			case st != nil:
				if st.Active != tt.wantGen || st.LastGen != 4 || len(st.Gens) != 1 || st.Gens[0].Workers[0].Token != "t" || st.Group[0] != "t" {
					t.Errorf("loadState = %+v", st)
				}
			}
		})
	}
}
