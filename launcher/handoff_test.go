package launcher

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// TestHandoffListenFree: a process started by a standalone parent whose
// welcome lists control.CapListenFree listens at once, without asking;
// under a parent (or supervisor) that does not list it, it asks and waits
// for the grant; and the parent still grants the listen of an older child
// that asks.
func TestHandoffListenFree(t *testing.T) {
	t.Run("new child, new parent", func(t *testing.T) {
		f := startFakeSupervisor(t, 1, control.Version, "")
		f.caps.Store(&[]string{control.CapReadyHealth, control.CapListenFree})
		supervisedEnv(t, f.path, true)
		app, err := New(quietOptions())
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		c := f.conn(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		lns, err := app.Listen(ctx) // no grant is ever sent
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		defer func() {
			for _, ln := range lns {
				ln.Close()
			}
		}()
		read(t, c, control.TypeListening) // not a TypeListen first
		if err := app.Ready(); err != nil {
			t.Fatal(err)
		}
		read(t, c, control.TypeReady)
	})
	t.Run("new child, old parent", func(t *testing.T) {
		f := startFakeSupervisor(t, 1, 1, "")
		f.caps.Store(&[]string{control.CapReadyHealth})
		supervisedEnv(t, f.path, true)
		app, err := New(quietOptions())
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		listenAndReady(t, app, f.conn(t)) // asks, and waits for the grant
	})
	t.Run("old child, new parent", func(t *testing.T) {
		l, cc := handoffSocket(t)
		cc.Write(control.Message{Type: control.TypeHello, Version: 1, Token: "tok"})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		exited := &exitWatch{done: make(chan struct{})}
		pc, err := acceptChild(ctx, l, "tok", exited, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if w := read(t, cc, control.TypeWelcome); !control.HasCap(w.Caps, control.CapListenFree) {
			t.Errorf("the parent's welcome lists %v; want %s", w.Caps, control.CapListenFree)
		}
		a := &App{}
		ready := make(chan error, 1)
		go func() { ready <- a.awaitChildReady(ctx, pc, exited) }() // ends at the child's ready, or at ctx's end
		cc.Write(control.Message{Type: control.TypeListen})         // as children before CapListenFree did
		read(t, cc, control.TypeGrant)
		cc.Write(control.Message{Type: control.TypeListening})
		cc.Write(control.Message{Type: control.TypeReady})
		if err := <-ready; err != nil {
			t.Errorf("awaitChildReady: %v", err)
		}
	})
}

// TestHandoffPIDFileAfterSignalsCaught: a process started by a standalone
// parent reports ready before it catches signals (Serve), but writes the
// pid file it takes over only once it has: a SIGTERM sent as soon as the
// file names it drains it, as one from a script that read the file would
// (SIGTERM's default action would end the test binary instead).
func TestHandoffPIDFileAfterSignalsCaught(t *testing.T) {
	f := startFakeSupervisor(t, 1, control.Version, "")
	f.caps.Store(&[]string{control.CapReadyHealth, control.CapListenFree})
	supervisedEnv(t, f.path, true)
	opts := quietOptions()
	opts.PIDFile = filepath.Join(t.TempDir(), "app.pid")
	app, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	c := f.conn(t)
	ran := make(chan error, 1)
	go func() { // ends when the SIGTERM below has drained it
		ran <- app.Run(context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	}()
	read(t, c, control.TypeListening)
	read(t, c, control.TypeReady)
	if err := c.Write(control.Message{Type: control.TypeHandoffDone}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
		if b, err := os.ReadFile(opts.PIDFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(os.Getpid()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no pid file 10 s after the handoff")
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10 s after SIGTERM")
	}
}
