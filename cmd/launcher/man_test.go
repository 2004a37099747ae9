package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	code, stdout, stderr := runCLI(t, newCLI, "man", dir)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout = %q; want nothing", stdout)
	}
	for _, page := range []string{"launcher.1", "launcher-start.1", "launcher-upgrade.1", "launcher-rollback.1",
		"launcher-status.1", "launcher-stop.1", "launcher-demo.1", "launcher-completion.1"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil {
			t.Error(err)
			continue
		}
		if !strings.HasPrefix(string(b), ".nh\n.TH ") || !strings.Contains(string(b), "--state-dir") {
			t.Errorf("%s is no man page naming --state-dir:\n%.300s", page, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "launcher-man.1")); err == nil {
		t.Errorf("launcher-man.1 written; want none for the hidden man command")
	}
}
