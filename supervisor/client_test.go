package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/launcherd/launcher/internal/control"
)

// TestClientGivesUpOnASilentSupervisor: a command to a supervisor that
// accepts its connection but never answers (stopped with SIGSTOP: the
// kernel still queues connections) fails after FirstReply, naming the
// supervisor's pid, instead of hanging (a new user's trial: status and
// upgrade hung past 30 s).
func TestClientGivesUpOnASilentSupervisor(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", ControlSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.WriteFile(PIDFile(dir), []byte("4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Client{StateDir: dir, FirstReply: 200 * time.Millisecond}.Status(ctx)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Status took %s; want about 200ms", took)
	}
	if err == nil || !strings.Contains(err.Error(), "status: the supervisor (pid 4242) has not answered in 200ms") || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Status = %v; want the supervisor (pid 4242) has not answered in 200ms", err)
	}
}

// TestServingOrphansSaysWhatDrains: without a supervisor, a generation
// that was draining when it died (a stop under way) is named as running,
// with its state, not as serving (a new user's trial: "still serve" for
// workers whose port refused connections).
func TestServingOrphansSaysWhatDrains(t *testing.T) {
	const token = "t0ken-of-the-test"
	cmd := exec.Command("sleep", "30")
	cmd.Env = append(os.Environ(), control.EnvToken+"="+token)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	dir := t.TempDir()
	st := savedState{Active: 2, Gens: []savedGen{{Num: 2, Release: savedRelease{Version: "v2", Path: "/bin/sleep"}, State: StateDraining,
		Workers: []savedWorker{{PID: cmd.Process.Pid, Token: token}}}}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statePath(dir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("generation 2 (v2, draining) still run (pids %d)", cmd.Process.Pid)
	if got := servingOrphans(dir); got != want {
		t.Errorf("servingOrphans = %q; want %q", got, want)
	}
}

// TestClientGivesUpOnAStoppedSupervisor: any command, a stop too (which
// may wait long for its drains, and which supervisors before this client
// answer only at the end), gives up once the supervisor's process has
// been stopped (SIGSTOP) for FirstReply; a silent supervisor that runs is
// waited for.
func TestClientGivesUpOnAStoppedSupervisor(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", ControlSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sup := exec.Command("sleep", "30") // stands for the supervisor's process
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sup.Process.Kill(); sup.Wait() }()
	if err := os.WriteFile(PIDFile(dir), []byte(fmt.Sprintf("%d\n", sup.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Client{StateDir: dir, FirstReply: 300 * time.Millisecond}

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err = c.Stop(ctx, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop to a silent but running supervisor = %v; want it waited for until the context's end", err)
	}

	if err := sup.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = c.Stop(ctx, nil)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Stop took %s; want about 300ms after the stop was seen", took)
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("stop: the supervisor (pid %d) has been stopped (kill -STOP) for 300ms; once it runs again", sup.Process.Pid)) {
		t.Errorf("Stop = %v; want: the supervisor has been stopped", err)
	}
	// status, which gives up on silence too, names the stop.
	_, err = c.Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "status: the supervisor") || !strings.Contains(err.Error(), "has been stopped (kill -STOP)") {
		t.Errorf("Status = %v; want: the supervisor has been stopped", err)
	}
}

// TestPeerGone: a control connection whose client closed it is seen as
// gone without a read; one still open is not, and nothing is consumed.
func TestPeerGone(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", dir+"/s")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if peerGone(server) {
		t.Error("peerGone with the client open and a byte unread = true; want false")
	}
	b := make([]byte, 1)
	if n, err := server.Read(b); n != 1 || err != nil || b[0] != 'x' {
		t.Fatalf("read after the peek: %d %q %v; want the byte still there", n, b, err)
	}
	if peerGone(server) {
		t.Error("peerGone with the client open = true; want false")
	}
	client.Close()
	if !peerGone(server) {
		t.Error("peerGone after the client closed = false; want true")
	}
}

// TestStatusNamesWorkersThatDidNotAnswer: a worker whose counts cannot be
// read within the status's second is named, so that the generation's
// counts, which leave it out, are not taken for the whole (a new user's
// trial: one of two workers stopped showed 1 in flight of 4).
func TestStatusNamesWorkersThatDidNotAnswer(t *testing.T) {
	fx := newFakeEffects(t)
	r := startRig(t, Config{Workers: 2, Probation: NoProbation}, fx, nil)
	r.waitStarted()
	// Set before its workers start: they take their behaviour then.
	r.behave("v2", behaviour{countsFail: true})
	if _, err := r.upgrade("v2", true); err != nil {
		t.Fatal(err)
	}
	st, err := r.s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	g := st.Generations[len(st.Generations)-1]
	if g.Version != "v2" {
		t.Fatalf("last generation %+v; want v2's", g)
	}
	if want := slices.Sorted(slices.Values(g.PIDs)); !slices.Equal(g.Unanswered, want) {
		t.Errorf("unanswered %v; want every worker's pid %v", g.Unanswered, want)
	}
}
