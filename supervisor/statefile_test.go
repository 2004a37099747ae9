package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// TestSavedReportsJSON: the state file (marshalState) reads as the state
// it was, and its reports as the UpgradeReports they were, whether their JSON was kept (a final report)
// or made at this write (one still changing), and a report's kept JSON
// is dropped with the report.
func TestSavedReportsJSON(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	final := &UpgradeReport{Generation: 2, Version: "v2", From: 1, FromVersion: "v1", Command: at, ReadyAfter: 5 * time.Millisecond,
		VerdictAfter: 9 * time.Millisecond, GoneAfter: 20 * time.Millisecond, Verdict: VerdictPassed, New: &WindowFigures{Requests: 7}}
	open := &UpgradeReport{Generation: 3, Version: "v3", From: 2, FromVersion: "v2", Command: at, Verdict: VerdictPassed}
	l := &loop{reports: []*UpgradeReport{final, open}}
	check := func(when string) {
		t.Helper()
		st := savedState{Supervisor: 7, Saved: at, Listen: []string{"127.0.0.1:1"}, Active: 3, Canary: 10, Reports: l.savedReports()}
		b, err := marshalState(st)
		if err != nil {
			t.Fatal(err)
		}
		var got savedState
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v in\n%s", when, err, b)
		}
		plain, _ := json.Marshal(st)
		var wantSt savedState
		json.Unmarshal(plain, &wantSt)
		g, _ := json.Marshal(got)
		if w, _ := json.Marshal(wantSt); string(g) != string(w) {
			t.Errorf("%s: state read back\n%s\nwant\n%s", when, g, w)
		}
		want, _ := json.Marshal(l.upgradeHistory())
		have := make([]UpgradeReport, 0, len(got.Reports))
		for _, r := range got.Reports {
			have = append(have, r.UpgradeReport)
		}
		if h, _ := json.Marshal(have); string(h) != string(want) {
			t.Errorf("%s: reports read back\n%s\nwant\n%s", when, h, want)
		}
	}
	check("first write")
	if _, ok := l.reportJSON[final]; !ok || len(l.reportJSON) != 1 {
		t.Errorf("kept JSON of %d reports, final one %v; want the final one only", len(l.reportJSON), ok)
	}
	open.GoneAfter = 30 * time.Millisecond // now final too
	check("after the second report's generation went")
	l.reports = l.reports[1:]
	check("after the first report left the history")
	if _, ok := l.reportJSON[final]; ok || len(l.reportJSON) != 1 {
		t.Errorf("kept JSON of %d reports, of the dropped one %v; want the remaining one only", len(l.reportJSON), ok)
	}
}
