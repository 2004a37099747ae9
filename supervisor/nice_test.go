package supervisor

import (
	"os/exec"
	"testing"
)

// A process started by startNiced runs at the nice value given, the
// calling goroutine's thread does not keep it, and renice gives the
// process's threads the base value back. Needs CAP_SYS_NICE for the last
// step (root has it): skipped without.
func TestStartNicedAndRenice(t *testing.T) {
	base, err := probeNice(10)
	if err != nil {
		t.Skip(err)
	}
	cmd := exec.Command("sleep", "30")
	if err := startNiced(base+10, base, cmd.Start); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if got, err := niceOf(cmd.Process.Pid); err != nil || got != base+10 {
		t.Fatalf("nice of the started process = %d, %v; want %d", got, err, base+10)
	}
	if got, err := niceOf(0); err != nil || got != base {
		t.Fatalf("nice of the caller's thread = %d, %v; want %d", got, err, base)
	}
	if err := renice(cmd.Process.Pid, base); err != nil {
		t.Fatal(err)
	}
	if got, err := niceOf(cmd.Process.Pid); err != nil || got != base {
		t.Fatalf("nice after renice = %d, %v; want %d", got, err, base)
	}
}
