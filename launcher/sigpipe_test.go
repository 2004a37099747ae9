package launcher

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// envSIGPIPEHelper makes the test binary TestSIGPIPECaughtByNew's worker.
const envSIGPIPEHelper = "LAUNCHER_TEST_SIGPIPE_HELPER"

// TestSIGPIPECaughtByNew: a worker whose stderr (a pipe to the supervisor)
// has lost its reader gets EPIPE from a write there once New has returned,
// not SIGPIPE's exit: New catches it while it dials, and returns only
// once it has. The worker is this test binary run again.
func TestSIGPIPECaughtByNew(t *testing.T) {
	if os.Getenv(envSIGPIPEHelper) == "1" {
		app, err := New(quietOptions())
		if err != nil {
			os.Exit(3)
		}
		_, err = fmt.Fprintln(os.Stderr, "to a pipe without a reader")
		app.Close()
		if err == nil {
			os.Exit(4)
		}
		os.Exit(0)
	}
	f := startFakeSupervisor(t, 1, 2, "")
	supervisedEnv(t, f.path, false)
	t.Setenv(envSIGPIPEHelper, "1")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.Close() // every write to the worker's stderr meets EPIPE
	defer pw.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGPIPECaughtByNew$")
	cmd.Stderr = pw
	err = cmd.Run()
	if err != nil {
		t.Errorf("worker: %v (%s); want exit 0: SIGPIPE caught, the write failed with EPIPE", err, cmd.ProcessState)
	}
}
