package main

import (
	"bytes"
	"flag"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra/doc"
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

// updateMan rewrites the embedded man pages from the command tree:
// go test ./cmd/launcher -run TestManPagesCurrent -update-man
var updateMan = flag.Bool("update-man", false, "rewrite cmd/launcher/man/*.1 from the command tree")

// TestManPagesCurrent: the man pages the program embeds are what cobra's
// generator makes of the command tree now, but for the month in their
// header (kept, so that an unchanged tree makes unchanged pages).
func TestManPagesCurrent(t *testing.T) {
	t.Setenv("LAUNCHER_STATE_DIR", "")
	date := time.Now()
	if b, err := manPages.ReadFile("man/launcher.1"); err == nil && !*updateMan {
		// .TH "LAUNCHER" "1" "Nov 2026" "launcher" "launcher manual"
		if f := strings.Split(string(b), "\""); len(f) > 5 {
			if d, err := time.Parse("Jan 2006", f[5]); err == nil {
				date = d
			}
		}
	}
	dir := t.TempDir()
	root := newCLI(io.Discard, io.Discard).command()
	header := &doc.GenManHeader{Section: "1", Source: "launcher", Manual: "launcher manual", Date: &date}
	if err := doc.GenManTree(root, header, dir); err != nil {
		t.Fatal(err)
	}
	made, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		t.Fatal(err)
	}
	if *updateMan {
		old, _ := filepath.Glob("man/*.1")
		for _, p := range old {
			os.Remove(p)
		}
		for _, p := range made {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("man", filepath.Base(p)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	embedded, err := fs.Glob(manPages, "man/*.1")
	if err != nil {
		t.Fatal(err)
	}
	if len(embedded) != len(made) {
		t.Errorf("%d embedded man pages, %d made from the command tree", len(embedded), len(made))
	}
	for _, p := range made {
		want, _ := os.ReadFile(p)
		got, err := manPages.ReadFile("man/" + filepath.Base(p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("man/%s is stale (%v): go test ./cmd/launcher -run TestManPagesCurrent -update-man", filepath.Base(p), err)
		}
	}
}
