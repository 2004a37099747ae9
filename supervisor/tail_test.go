package supervisor

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

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

// Lines kept for an error are one terminal line each: control characters
// escaped (a carriage return wrote over "launcher: upgrade to …", an
// escape sequence coloured the terminal), invalid UTF-8 replaced, and a
// long line cut, saying its length (a new user's trial: a 5,184-character
// error line).
func TestTailLinesArePrintable(t *testing.T) {
	tb := newTailBuffer(5)
	tb.add("over\x1b[31mred\x1b[0m\ttab\rback")
	tb.add("last \xe2\x82")
	tb.add(strings.Repeat("x", 5000))
	want := `over\x1b[31mred\x1b[0m\ttab\rback | last ` + "\uFFFD | " + strings.Repeat("x", maxTailLine) + "… (5000 bytes)"
	if got := tb.last(3); got != want {
		t.Errorf("tail %q\nwant %q", got, want)
	}
}

// A Go crash's reason keeps its first line ("panic: …"), which the stack
// after it pushed out of the last lines: the reason of a crash read only
// the stack's end (a new user's trial).
func TestTailKeepsTheCrashReportsFirstLine(t *testing.T) {
	tb := newTailBuffer(20)
	tb.add("level=INFO msg=serving")
	for _, l := range []string{"panic: background job: lost connection to queue", "", "goroutine 7 [running]:", "main.job(...)",
		"\t/src/main.go:100 +0x2d4", "created by main.main in goroutine 1", "\t/src/main.go:86 +0xbf0"} {
		tb.add(l)
	}
	want := "panic: background job: lost connection to queue | … | \t/src/main.go:100 +0x2d4 | created by main.main in goroutine 1 | \t/src/main.go:86 +0xbf0"
	if got := tb.last(3); got != want {
		t.Errorf("last(3) = %q; want %q", got, want)
	}
	// Among the last lines already: once.
	short := newTailBuffer(20)
	short.add("fatal error: all goroutines are asleep - deadlock!")
	short.add("exit")
	if got, want := short.last(3), "fatal error: all goroutines are asleep - deadlock! | exit"; got != want {
		t.Errorf("last(3) = %q; want %q", got, want)
	}
}

// A release that exits at a bad flag says why in the line before its
// usage message, which the usage's flags pushed out of the last lines:
// the error read only "the PEM private key of -tls-cert | -unhealthy | …"
// (a new user's trial). Cobra's "Error: …" before "Usage:" too.
func TestTailKeepsTheLineBeforeAUsage(t *testing.T) {
	for _, c := range []struct{ reason, usage string }{
		{"flag provided but not defined: -no-such-flag", "Usage of /srv/hello/releases/v2/hello:"},
		{"Error: unknown flag: --nope", "Usage:"},
	} {
		tb := newTailBuffer(20)
		tb.add(c.reason)
		tb.add(c.usage)
		for i := range 10 {
			tb.add(fmt.Sprintf("  -flag%d string", i))
			tb.add("    \tits help")
		}
		got := tb.last(3)
		if !strings.HasPrefix(got, c.reason+" | … | ") {
			t.Errorf("last(3) = %q; want it to begin with %q", got, c.reason)
		}
	}
}
