package supervisor

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A script release whose #! line names no interpreter that can run is
// refused before anything starts, saying why; exec said "no such file or
// directory" of the script itself (a new user's trial: a missing
// /usr/bin/python9, and a script saved with CRLF line endings).
func TestCheckExecutableScripts(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, body, want string }{
		{"sh", "#!/bin/sh\nexec true\n", ""},
		{"env", "#! /usr/bin/env sh\nexec true\n", ""},
		{"missing", "#!/usr/bin/python9\nprint(1)\n", "its interpreter /usr/bin/python9 (its #! line) does not exist"},
		{"crlf", "#!/bin/sh\r\nexec true\r\n", "its #! line ends with a carriage return (CRLF line endings): exec looks for \"/bin/sh\\r\""},
		{"crlf-env", "#!/usr/bin/env sh\r\nexec true\r\n", "carriage return"},
		{"dir", "#!/tmp\n", "its interpreter /tmp (its #! line) is not an executable file"},
		{"empty", "#!\n", "its #! line names no interpreter"},
		{"other", "not a script\n", ""}, // left to exec (binfmt_misc)
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, []byte(c.body), 0o755); err != nil {
			t.Fatal(err)
		}
		err := checkExecutable(p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v; want it taken", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v; want %q", c.name, err, c.want)
		}
	}
}

// A line without its newline yet is in the tail: a never-ready release
// that writes its last words with printf and hangs is heard in the ready
// timeout's error (a new user's trial: it read no stderr at all). It is
// passed on whole once its newline or the end comes.
func TestTailKeepsALineWithoutItsNewline(t *testing.T) {
	pr, pw := io.Pipe()
	var out strings.Builder
	var mu sync.Mutex
	tb := newTailBuffer(5)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.copyLines(writerFunc(func(b []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return out.Write(b)
		}), pr)
	}()
	pw.Write([]byte("warming\r\nno newline at the end"))
	deadline := time.Now().Add(5 * time.Second)
	for tb.last(3) != "warming | no newline at the end" {
		if time.Now().After(deadline) {
			t.Fatalf("tail %q; want both lines", tb.last(3))
		}
		time.Sleep(time.Millisecond)
	}
	pw.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if got := out.String(); got != "warming\nno newline at the end\n" {
		t.Errorf("passed on %q; want each line whole", got)
	}
	if got := tb.last(3); got != "warming | no newline at the end" {
		t.Errorf("tail after the end %q", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
