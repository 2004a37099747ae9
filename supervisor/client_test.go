package supervisor

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"
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
