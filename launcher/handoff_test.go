package launcher

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// TestHandoverToAnExitingRelease: a standalone handover whose new process
// exits at start fails with that exit, and so does the next one: neither
// waits for an exit it has already seen. (The first used to wait forever,
// and Run ignored every later SIGHUP as "a handover is in progress".)
func TestHandoverToAnExitingRelease(t *testing.T) {
	for _, env := range []string{control.EnvControl, control.EnvListen, control.EnvHandoff, control.EnvAdmin} {
		t.Setenv(env, "")
	}
	exe := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The handover starts os.Args[0] again: make that the release.
	arg0 := os.Args[0]
	os.Args[0] = exe
	t.Cleanup(func() { os.Args[0] = arg0 })

	opts := quietOptions()
	opts.Addr = "127.0.0.1:0"
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lns, err := a.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for i := 1; i <= 2; i++ {
		errc := make(chan error, 1)
		go func() { errc <- a.handover(ctx) }() // ends with the handover, or with the test binary
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "exited") {
				t.Errorf("handover %d = %v; want the new process's exit", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("handover %d still running 10 s after its new process exited", i)
		}
	}
}
