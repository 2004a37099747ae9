package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSwapFile: each write replaces the content whole and the swap file
// keeps the one before, the two names exchanged: the state file and its
// swap file keep their two inodes from one write to the next.
func TestSwapFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), stateName)
	inodes := map[uint64]bool{}
	// Each write shorter than the one before: nothing of it may remain.
	for i, content := range []string{`{"n":1, "pad": "xxxxxxxx"}`, `{"n":2, "pad": "xxxx"}`, `{"n":3}`, `{"n":4}`} {
		if err := swapFile(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != content+"\n" {
			t.Fatalf("write %d: read %q; want %q", i, b, content+"\n")
		}
		if i > 0 {
			prev, err := os.ReadFile(path + swapSuffix)
			if err != nil || !strings.HasPrefix(string(prev), fmt.Sprintf(`{"n":%d`, i)) {
				t.Errorf("write %d: swap file %q, %v; want the write before", i, prev, err)
			}
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v; want 0600", fi.Mode().Perm())
		}
		inodes[fi.Sys().(*syscall.Stat_t).Ino] = true
	}
	if len(inodes) > 2 {
		t.Errorf("the state file had %d inodes over 4 writes; want 2 (exchanged, not made anew)", len(inodes))
	}
}

// BenchmarkStateWrite: a state file's write by exchange (swapFile)
// against one through a new file renamed over it (writeFileAtomic).
func BenchmarkStateWrite(b *testing.B) {
	content := []byte(`{"supervisor_pid": 1, "generations": []}`)
	b.Run("exchange", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), stateName)
		for b.Loop() {
			if err := swapFile(path, content); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rename", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), stateName)
		for b.Loop() {
			if err := writeFileAtomic(path, string(content)+"\n"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
