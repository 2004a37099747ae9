package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDemos runs the README's first command, and its --faults and --canary
// variants, as a user would: each must exit 0 and say that nothing failed
// (beyond what a deliberate crash, or a bad release's own 500s, takes). As
// everything the tests run, the processes of the demo are built with
// -race here: GOFLAGS reaches the go build of the demo's own releases and
// launcher (a user's demo builds without it), and -v puts their logs, with
// any race report, in the output.
func TestDemos(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"demo", "-v"}, []string{"0 failed, over 2 upgrades", `long request: "hello from v1"`}},
		{[]string{"demo", "-v", "--faults"}, []string{"crashed during its probation", "adopted generation 1", "0 other failures", "passed its 3s probation"}},
		{[]string{"demo", "-v", "--canary"}, []string{"gets 50% of new connections", "passed its 2s probation", "rolled back during its canary", "rolled_back (errors", "0 other failures"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bins.launcher, tt.args...)
			cmd.Env = append(os.Environ(), "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -race"))
			out, err := cmd.CombinedOutput()
			noRace(t, "launcher "+strings.Join(tt.args, " "), out, err)
			if err != nil {
				t.Fatalf("launcher %v: %v\n%s", tt.args, err, out)
			}
			// The start line it prints is the one it ran: --releases
			// included, which the upgrades to v2 by name need (a new
			// user's trial copied --canary's, without it).
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("launcher %v output lacks %q:\n%s", tt.args, w, out)
				}
			}
			var start string
			for _, line := range strings.Split(string(out), "\n") {
				if i := strings.Index(line, "2. launcher start "); i >= 0 {
					start = line[i:]
				}
			}
			if !strings.Contains(start, " --releases ") {
				t.Errorf("launcher %v printed the start line %q; want the one it ran, --releases included", tt.args, start)
			}
		})
	}
}
