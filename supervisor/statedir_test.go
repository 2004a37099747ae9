package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestRefusedStartNamesTheLockHolder: a start refused because another
// supervisor holds the state directory names that supervisor's pid, from
// the kernel's lock table, even while the pid file still names the one
// before (the holder writes it after taking the lock; here it is made to
// name pid 1 as a killed supervisor's file would).
func TestRefusedStartNamesTheLockHolder(t *testing.T) {
	dir := t.TempDir()
	d, err := openStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if err := os.WriteFile(PIDFile(dir), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = openStateDir(dir)
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d)", os.Getpid())) {
		t.Fatalf("second open: %v; want ErrRunning naming pid %d", err, os.Getpid())
	}
}
