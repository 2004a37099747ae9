package launcher

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// TestStandalonePIDFile: a standalone App writes its pid file once it
// serves and removes it at the end of a clean drain (here: ctx ends, as
// on SIGTERM), unless by then the file names another process, as after a
// SIGHUP handover it names the new one.
func TestStandalonePIDFile(t *testing.T) {
	tests := []struct {
		name     string
		rewrite  string // written over the pid file before the drain, "" for nothing
		wantLeft bool
	}{
		{name: "removed at a clean exit", wantLeft: false},
		{name: "kept when it names another process", rewrite: "1\n", wantLeft: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{control.EnvControl, control.EnvHandoff, control.EnvListen} {
				t.Setenv(k, "") // standalone, whatever runs the test
			}
			pidFile := filepath.Join(t.TempDir(), "app.pid")
			opts := quietOptions()
			opts.Addr, opts.PIDFile = "127.0.0.1:0", pidFile
			app, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ran := make(chan error, 1)
			go func() { ran <- app.Run(ctx, http.NotFoundHandler()) }() // ends when ctx does

			self := strconv.Itoa(os.Getpid())
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				b, _ := os.ReadFile(pidFile)
				if strings.TrimSpace(string(b)) == self {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("pid file holds %q after 10s; want %s", b, self)
				}
			}
			if tt.rewrite != "" {
				if err := os.WriteFile(pidFile, []byte(tt.rewrite), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			select {
			case err := <-ran:
				if err != nil {
					t.Fatalf("Run = %v; want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run still running 10s after ctx ended")
			}
			b, err := os.ReadFile(pidFile)
			switch {
			case tt.wantLeft && string(b) != tt.rewrite:
				t.Errorf("pid file = %q, %v; want %q left alone", b, err, tt.rewrite)
			case !tt.wantLeft && !os.IsNotExist(err):
				t.Errorf("pid file = %q, %v; want it removed", b, err)
			}
		})
	}
}
