package rig

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// report is a race report as the race detector prints it.
const report = `==================
WARNING: DATA RACE
Write at 0x00c0001a4108 by goroutine 42:
  github.com/launcherd/launcher/supervisor.(*Supervisor).onExit()
      /src/supervisor/supervisor.go:310 +0x4c4

Previous read at 0x00c0001a4108 by goroutine 17:
  github.com/launcherd/launcher/supervisor.(*Supervisor).Status()
      /src/supervisor/status.go:61 +0x1f0

Goroutine 42 (running) created at:
  github.com/launcherd/launcher/supervisor.(*Supervisor).startWorker()
      /src/supervisor/worker.go:158 +0x9a4
==================
`

const logLines = `time=2026-01-02T03:04:05Z level=INFO msg="generation ready" generation=1
time=2026-01-02T03:04:05Z level=INFO msg="worker listening" worker=0
`

func TestRaceDetector(t *testing.T) {
	long := "==================\nWARNING: DATA RACE\n" + strings.Repeat("  frame()\n", 60) + "==================\n"
	tests := []struct {
		name  string
		in    string
		want  []string // in the report, in this order
		never []string // not in it
	}{
		{"no race", logLines, nil, nil},
		{"a report", logLines + report + logLines,
			[]string{"1 data race report(s); the first:\n==================\nWARNING: DATA RACE\nWrite at", "(*Supervisor).onExit()", "Previous read", "(*Supervisor).Status()", "worker.go:158 +0x9a4\n=================="},
			[]string{"generation ready"}},
		{"two reports, the first shown", report + strings.ReplaceAll(report, "onExit", "second"),
			[]string{"2 data race report(s)", "onExit"}, []string{"second"}},
		{"amid other processes' lines", "==================\nWARNING: DATA RACE\n" + logLines + "Write at 0x1 by goroutine 3:\n",
			[]string{"WARNING: DATA RACE\ntime=", "Write at 0x1"}, nil},
		{"cut at 40 lines", long, []string{"1 data race report(s)", "frame()\n[…]"}, nil},
		{"the last line unfinished", logLines + "WARNING: DATA RACE", []string{"1 data race report(s); the first:\nWARNING: DATA RACE"}, nil},
		{"a worker's exit status 66 only", logLines + `level=WARN msg="worker exited; restarting" worker=0 err="exit status 66"` + "\n",
			[]string{"exit status 66, the race detector's", `err="exit status 66"`}, nil},
		{"CRLF lines", strings.ReplaceAll(report, "\n", "\r\n"), []string{"the first:\n==================\nWARNING: DATA RACE\nWrite at"}, []string{"\r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, and one byte per write: lines split anywhere.
			for _, chunk := range []int{len(tt.in), 1, 7} {
				var out bytes.Buffer
				d := NewRaceDetector(&out)
				for in := tt.in; in != ""; {
					n := min(chunk, len(in))
					if w, err := d.Write([]byte(in[:n])); w != n || err != nil {
						t.Fatalf("Write = %d, %v; want %d, nil", w, err, n)
					}
					in = in[n:]
				}
				if out.String() != tt.in {
					t.Errorf("chunk %d: passed on %q; want %q", chunk, out.String(), tt.in)
				}
				got := d.Report()
				if len(tt.want) == 0 && got != "" {
					t.Errorf("chunk %d: report %q; want none", chunk, got)
				}
				rest := got
				for _, w := range tt.want {
					i := strings.Index(rest, w)
					if i < 0 {
						t.Errorf("chunk %d: report lacks %q (in order):\n%s", chunk, w, got)
						break
					}
					rest = rest[i+len(w):]
				}
				for _, w := range tt.never {
					if strings.Contains(got, w) {
						t.Errorf("chunk %d: report has %q:\n%s", chunk, w, got)
					}
				}
				if n := strings.Count(got, "\n") + 1; n > raceLines+2 {
					t.Errorf("chunk %d: report of %d lines; want at most %d and a header", chunk, n, raceLines)
				}
			}
		})
	}
}

// TestRaceReportExitStatus: an exit with status 66 is the race detector's
// even when no report made it to the output.
func TestRaceReportExitStatus(t *testing.T) {
	tests := []struct {
		code int
		out  string
		want string
	}{
		{0, logLines, ""},
		{1, logLines, ""},
		{66, logLines, "exit status 66, the race detector's, though no report was seen"},
		{66, report, "exit status 66; 1 data race report(s)"},
		{0, report, "1 data race report(s)"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code), func(t *testing.T) {
			err := exec.Command("sh", "-c", fmt.Sprintf("exit %d", tt.code)).Run()
			got := RaceReport([]byte(tt.out), err)
			if (tt.want == "") != (got == "") || !strings.HasPrefix(got, tt.want) {
				t.Errorf("RaceReport(_, exit %d) = %q; want %q…", tt.code, got, tt.want)
			}
		})
	}
}

// TestRaceDetectorSeesARealRace builds testdata/racy, which races on
// purpose, with -race, runs it as the tests run their processes, and
// checks that the detector reports the race with its two stacks and that
// the process ended with status 66.
func TestRaceDetectorSeesARealRace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program with -race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := moduleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "racy")
	if err := goCommand(ctx, root, nil, BuildOptions{Race: true}.buildArgs(bin, "./internal/rig/testdata/racy")...); err != nil {
		t.Fatal(err)
	}
	var log LogBuffer
	d := NewRaceDetector(&log)
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), "GORACE="+GORACE)
	cmd.Stdout, cmd.Stderr = d, d
	err = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != RaceExitStatus {
		t.Errorf("racy exited with %d (%v); want %d", code, err, RaceExitStatus)
	}
	got := d.Report()
	for _, want := range []string{"1 data race report(s)", "WARNING: DATA RACE", "main.main.func1()", "racy/main.go:", "main.main()"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s\n--- output:\n%s", want, got, log.String())
		}
	}
	if strings.Contains(log.String(), "racy: n =") {
		t.Errorf("racy went on after its race: GORACE=%s did not stop it", GORACE)
	}
	if r := RaceReport([]byte(log.String()), err); !strings.HasPrefix(r, "exit status 66; 1 data race report(s)") {
		t.Errorf("RaceReport of the output and exit = %q…", r[:min(len(r), 80)])
	}
}
