package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// fakeSupervisor is a control socket in a temporary directory that answers
// hellos like a supervisor speaking the versions lo…hi: a version-1 one
// (1, 1) refuses everything else exactly as version-1 supervisors did.
// With refuse set it refuses every hello with that error instead.
// Welcomed connections come out on conns; every hello on hellos.
type fakeSupervisor struct {
	path   string
	lo, hi atomic.Int64
	refuse string
	hellos chan control.Message
	conns  chan *control.Conn
	caps   atomic.Pointer[[]string] // its welcome's
}

func startFakeSupervisor(t *testing.T, lo, hi int, refuse string) *fakeSupervisor {
	t.Helper()
	dir, err := os.MkdirTemp("", "lc") // short: a unix socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeSupervisor{
		path:   filepath.Join(dir, "control.sock"),
		refuse: refuse,
		hellos: make(chan control.Message, 16),
		conns:  make(chan *control.Conn, 4),
	}
	f.speak(lo, hi)
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() { // ends when the cleanup closes l
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			f.answer(control.NewConn(c))
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return f
}

// speak sets the versions the fake supervisor speaks from now on, as if
// another supervisor replaced it.
func (f *fakeSupervisor) speak(lo, hi int) {
	f.lo.Store(int64(lo))
	f.hi.Store(int64(hi))
}

func (f *fakeSupervisor) answer(c *control.Conn) {
	m, err := c.Read(time.Now().Add(5 * time.Second))
	if err != nil {
		c.Close()
		return
	}
	f.hellos <- m
	lo, hi := int(f.lo.Load()), int(f.hi.Load())
	switch {
	case f.refuse != "":
		c.Write(control.Message{Type: control.TypeResult, Error: f.refuse})
		c.Close()
	case m.Type != control.TypeHello || m.Version < lo || m.Version > hi:
		c.Write(control.Refusal(hi))
		c.Close()
	default:
		welcome := control.Message{Type: control.TypeWelcome, Version: m.Version}
		if caps := f.caps.Load(); caps != nil {
			welcome.Caps = *caps
		}
		c.Write(welcome)
		f.conns <- c
	}
}

// conn returns the next welcomed connection.
func (f *fakeSupervisor) conn(t *testing.T) *control.Conn {
	t.Helper()
	select {
	case c := <-f.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no worker was welcomed")
		return nil
	}
}

// helloVersions returns the versions of the hellos received so far.
func (f *fakeSupervisor) helloVersions() []int {
	var vs []int
	for {
		select {
		case m := <-f.hellos:
			vs = append(vs, m.Version)
		default:
			return vs
		}
	}
}

// supervisedEnv sets the environment a supervisor gives its worker.
func supervisedEnv(t *testing.T, path string, handoff bool) {
	t.Helper()
	t.Setenv(control.EnvControl, path)
	t.Setenv(control.EnvListen, "127.0.0.1:0")
	t.Setenv(control.EnvToken, "token")
	t.Setenv(control.EnvGeneration, "3")
	t.Setenv(control.EnvVersion, "vt")
	t.Setenv(control.EnvWorker, "0")
	t.Setenv(control.EnvAdmin, "")
	h := ""
	if handoff {
		h = "1"
	}
	t.Setenv(control.EnvHandoff, h)
}

func quietOptions() Options {
	return Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// read reads the next message from the worker and checks its type.
func read(t *testing.T, c *control.Conn, want string) control.Message {
	t.Helper()
	m, err := c.Read(time.Now().Add(10 * time.Second))
	if err != nil {
		t.Fatalf("read %s: %v", want, err)
	}
	if m.Type != want {
		t.Fatalf("got %+v; want a %s", m, want)
	}
	return m
}

// listenAndReady grants the App's listen on c and returns its ready.
func listenAndReady(t *testing.T, app *App, c *control.Conn) control.Message {
	t.Helper()
	listened := make(chan error, 1)
	go func() { // ends once the grant below arrives, or at the timeout
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := app.Listen(ctx)
		listened <- err
	}()
	read(t, c, control.TypeListen)
	if err := c.Write(control.Message{Type: control.TypeGrant}); err != nil {
		t.Fatal(err)
	}
	read(t, c, control.TypeListening)
	if err := <-listened; err != nil {
		t.Fatalf("Listen: %v", err)
	}
	if err := app.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	return read(t, c, control.TypeReady)
}

// TestHelloVersions: an App says hello at version 2 and, refused by a
// supervisor that speaks only version 1, again at 1; anything else refused
// stays refused. A process started by a standalone parent says hello at
// 1, which every parent accepts.
func TestHelloVersions(t *testing.T) {
	tests := []struct {
		name       string
		lo, hi     int
		refuse     string
		handoff    bool
		wantHellos []int
		wantErr    string
	}{
		{name: "v2 supervisor", lo: 1, hi: 2, wantHellos: []int{2}},
		{name: "v1 supervisor", lo: 1, hi: 1, wantHellos: []int{2, 1}},
		{name: "supervisor of the future", lo: 2, hi: 3, wantHellos: []int{2}},
		{name: "supervisor too new", lo: 3, hi: 3, wantHellos: []int{2}, wantErr: "protocol: want hello version 3"},
		{name: "unknown worker", lo: 1, hi: 2, refuse: "unknown worker", wantHellos: []int{2}, wantErr: "unknown worker"},
		{name: "v1 standalone parent", lo: 1, hi: 1, handoff: true, wantHellos: []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeSupervisor(t, tt.lo, tt.hi, tt.refuse)
			supervisedEnv(t, f.path, tt.handoff)
			app, err := New(quietOptions())
			if got := fmt.Sprint(f.helloVersions()); got != fmt.Sprint(tt.wantHellos) {
				t.Errorf("hellos at versions %v; want %v", got, tt.wantHellos)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: got %v; want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer app.Close()
			c := f.conn(t)
			listenAndReady(t, app, c)
			// A steer without ID, as a version-1 supervisor sends it.
			c.Write(control.Message{Type: control.TypeSteer, Slots: []int{0}})
			if m := read(t, c, control.TypeSteered); m.ID != 0 || m.Error != "" {
				t.Errorf("got %+v; want steered without ID or error", m)
			}
		})
	}
}

// TestRepliesEchoIDs: requests in flight at once to one worker are
// answered out of order, each reply with its request's ID (none to a
// version-1 supervisor, which sends none).
func TestRepliesEchoIDs(t *testing.T) {
	for _, v := range []int{2, 1} {
		t.Run(fmt.Sprintf("v%d supervisor", v), func(t *testing.T) {
			f := startFakeSupervisor(t, 1, v, "")
			supervisedEnv(t, f.path, false)
			app, err := New(quietOptions())
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer app.Close()
			c := f.conn(t)
			listenAndReady(t, app, c)

			id := func(n uint64) uint64 {
				if v < 2 {
					return 0
				}
				return n
			}
			requests := []control.Message{
				{Type: control.TypeSteer, ID: id(7), Slots: []int{0}},
				// Its accept queue must stay empty 150 ms: answered last
				// but for the release.
				{Type: control.TypeQuiesce, ID: id(8), SettleMS: 150},
				{Type: control.TypeSteer, ID: id(9), Slots: []int{0}},
			}
			for _, m := range requests {
				if err := c.Write(m); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for range requests {
				m, err := c.Read(time.Now().Add(10 * time.Second))
				if err != nil {
					t.Fatal(err)
				}
				if m.Error != "" {
					t.Errorf("%s %d: %s", m.Type, m.ID, m.Error)
				}
				got = append(got, fmt.Sprintf("%s %d", m.Type, m.ID))
			}
			want := []string{
				fmt.Sprintf("steered %d", id(7)),
				fmt.Sprintf("steered %d", id(9)),
				fmt.Sprintf("quiesced %d", id(8)),
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %v; want %v", got, want)
			}

			c.Write(control.Message{Type: control.TypeRelease, ID: id(10), SettleMS: 10})
			if m := read(t, c, control.TypeReleased); m.ID != id(10) || m.Error != "" {
				t.Errorf("got %+v; want released %d without error", m, id(10))
			}
			select {
			case <-app.Stopping():
			case <-time.After(5 * time.Second):
				t.Fatal("Stopping not closed after the release")
			}
		})
	}
}

// TestRejoinFallsBack: a worker that lost its supervisor rejoins the next
// one even if that one is older and speaks only version 1.
func TestRejoinFallsBack(t *testing.T) {
	f := startFakeSupervisor(t, 1, 2, "")
	supervisedEnv(t, f.path, false)
	app, err := New(quietOptions())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer app.Close()
	c := f.conn(t)
	listenAndReady(t, app, c)

	f.speak(1, 1) // the next supervisor is an older one
	c.Close()     // and this one dies
	c = f.conn(t)
	var got []string
	for _, m := range []control.Message{<-f.hellos, <-f.hellos, <-f.hellos} {
		got = append(got, fmt.Sprintf("v%d rejoin=%v ready=%v listening=%v", m.Version, m.Rejoin, m.Ready, m.Listening))
	}
	want := []string{
		"v2 rejoin=false ready=false listening=false",
		"v2 rejoin=true ready=true listening=true",
		"v1 rejoin=true ready=true listening=true",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("hellos %q; want %q", got, want)
	}
	c.Write(control.Message{Type: control.TypeSteer, Slots: []int{0}})
	if m := read(t, c, control.TypeSteered); m.ID != 0 || m.Error != "" {
		t.Errorf("got %+v; want steered without ID or error", m)
	}
}

// TestHandoffParentAcceptsVersions: a standalone parent welcomes a new
// process of version 1 or 2 at its own version, and refuses others.
func TestHandoffParentAcceptsVersions(t *testing.T) {
	tests := []struct {
		name    string
		hello   control.Message
		want    control.Message
		wantErr bool
	}{
		{"v1 child", control.Message{Type: control.TypeHello, Version: 1, Token: "tok"}, control.Message{Type: control.TypeWelcome, Version: 1}, false},
		{"v2 child", control.Message{Type: control.TypeHello, Version: 2, Token: "tok"}, control.Message{Type: control.TypeWelcome, Version: 2}, false},
		{"v3 child", control.Message{Type: control.TypeHello, Version: 3, Token: "tok"}, control.Refusal(2), true},
		{"wrong token", control.Message{Type: control.TypeHello, Version: 2, Token: "guess"}, control.Message{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, cc := handoffSocket(t)
			cc.Write(tt.hello)

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			pc, err := acceptChild(ctx, l, "tok", &exitWatch{done: make(chan struct{})}, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("acceptChild: got %v; want error %v", err, tt.wantErr)
			}
			if pc != nil {
				defer pc.Close()
			}
			m, _ := cc.Read(time.Now().Add(5 * time.Second))
			if m.Type != tt.want.Type || m.Version != tt.want.Version || m.Error != tt.want.Error {
				t.Errorf("child got %+v; want %+v", m, tt.want)
			}
		})
	}
}

// TestReadyCarriesHealth: under a supervisor whose welcome lists
// CapReadyHealth, Ready runs Options.Health and reports its failure with
// the ready; under one that does not, it leaves the check to /healthz.
func TestReadyCarriesHealth(t *testing.T) {
	tests := []struct {
		name      string
		caps      []string
		health    error
		wantError string
	}{
		{"healthy", []string{control.CapReadyHealth}, nil, ""},
		{"unhealthy", []string{control.CapReadyHealth}, errors.New("database down"), "database down"},
		{"a supervisor that asks /healthz", nil, errors.New("database down"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFakeSupervisor(t, 1, control.Version, "")
			f.caps.Store(&tt.caps)
			supervisedEnv(t, f.path, false)
			opts := quietOptions()
			calls := 0
			opts.Health = func() error { calls++; return tt.health }
			app, err := New(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			m := listenAndReady(t, app, f.conn(t))
			if m.Error != tt.wantError {
				t.Errorf("ready's error %q; want %q", m.Error, tt.wantError)
			}
			if want := len(tt.caps); calls != want {
				t.Errorf("Health called %d times by Ready; want %d", calls, want)
			}
		})
	}
}

// handoffSocket returns a standalone parent's handoff listener and a child
// connected to it, as a new process dials it; both close at the end of the
// test.
func handoffSocket(t *testing.T) (*net.UnixListener, *control.Conn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	child, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Close() })
	return l, control.NewConn(child)
}

// TestListenAtTheWelcome: a worker whose hello and welcome both list
// control.CapWelcomeGrant listens in New, reporting TypeListening without
// asking (no TypeListen, no TypeGrant), and Listen hands those sockets
// out; one that never calls Listen has them closed by Close.
func TestListenAtTheWelcome(t *testing.T) {
	start := func(t *testing.T) (*fakeSupervisor, *App, *control.Conn) {
		f := startFakeSupervisor(t, 1, control.Version, "")
		f.caps.Store(&[]string{control.CapReadyHealth, control.CapWelcomeGrant})
		supervisedEnv(t, f.path, false)
		app, err := New(quietOptions())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { app.Close() })
		if h := <-f.hellos; !control.HasCap(h.Caps, control.CapWelcomeGrant) {
			t.Errorf("hello lists %v; want %s", h.Caps, control.CapWelcomeGrant)
		}
		c := f.conn(t)
		read(t, c, control.TypeListening) // before Listen, not a TypeListen first
		return f, app, c
	}
	t.Run("Listen hands them out", func(t *testing.T) {
		_, app, c := start(t)
		if err := app.Ready(); !errors.Is(err, ErrNotListening) {
			t.Errorf("Ready before Listen: %v; want ErrNotListening", err)
		}
		lns, err := app.Listen(context.Background()) // no grant is ever sent
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		defer func() {
			for _, ln := range lns {
				ln.Close()
			}
		}()
		if len(lns) != 1 {
			t.Fatalf("Listen returned %d listeners; want 1", len(lns))
		}
		conn, err := net.Dial("tcp", lns[0].Addr().String())
		if err != nil {
			t.Fatalf("dial the listener bound at the welcome: %v", err)
		}
		conn.Close()
		if _, err := app.Listen(context.Background()); err == nil {
			t.Error("a second Listen succeeded; want an error")
		}
		if err := app.Ready(); err != nil {
			t.Fatal(err)
		}
		read(t, c, control.TypeReady)
	})
	t.Run("Close closes them when Listen never came", func(t *testing.T) {
		_, app, _ := start(t)
		app.mu.Lock()
		addr := app.lns[0].Addr().String()
		app.mu.Unlock()
		app.Close()
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts after Close; want it closed", addr)
		}
	})
}
