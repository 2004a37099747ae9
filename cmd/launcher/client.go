package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/launcherd/launcher/supervisor"
)

func (c *cli) runUpgrade(ctx context.Context, arg string, o upgradeOptions) error {
	pr := newPrinter(c.stdout)
	pr.json = o.json
	opts := supervisor.UpgradeOptions{Wait: o.wait, Canary: o.canary}
	if len(o.canary) > 0 {
		opts.CanaryInterval = o.interval
	}
	if o.verdict {
		return c.upgradeUntilVerdict(ctx, arg, opts, pr)
	}
	sum, err := c.client().UpgradeWith(ctx, arg, opts, pr.print)
	if err != nil {
		return interrupted(ctx, "upgrade", err) // the supervisor's message already names the command
	}
	pr.summary(sum)
	return nil
}

// upgradeUntilVerdict follows an upgrade as --wait does and stops at its
// verdict: passed (its probation passed or was superseded by a newer
// upgrade, or, without a probation, the old generation drains), or
// rolled back (an error naming why). What is left to follow, a drain
// that long requests can make last minutes, goes on in the supervisor:
// --wait's final answer comes only after it, for a rollback too (a new
// user's recheck: a requested rollback kept --verdict for the whole
// drain of the generation rolled back from).
func (c *cli) upgradeUntilVerdict(ctx context.Context, arg string, opts supervisor.UpgradeOptions, pr *printer) error {
	opts.Wait = true
	follow, stop := context.WithCancel(ctx)
	defer stop()
	var (
		newGen         int
		version        string
		served, passed bool
		back           error
	)
	_, err := c.client().UpgradeWith(follow, arg, opts, func(p supervisor.Progress) {
		pr.print(p)
		switch {
		case p.Step == supervisor.StepStarting && newGen == 0:
			newGen, version = p.Generation, p.Version
		case newGen == 0:
		case p.Step == supervisor.StepServes && p.Generation == newGen:
			served = true
		case p.Step == supervisor.StepProbationPassed && p.Generation == newGen,
			p.Step == supervisor.StepProbationEnded && p.Generation == newGen && p.Reason == supervisor.ReasonSuperseded,
			// Without a probation, the generation it replaced drains.
			p.Step == supervisor.StepDraining && served && p.Generation != newGen:
			passed = true
			stop()
		case p.Step == supervisor.StepRolledBack && p.Other == newGen && back == nil:
			back = fmt.Errorf("upgrade to %s: rolled back: %s", version, p)
			stop()
		}
	})
	switch {
	case ctx.Err() != nil:
		return interrupted(ctx, "upgrade", err)
	case back != nil:
		return back
	case passed:
		return nil
	}
	return err
}

func (c *cli) runPromote(ctx context.Context) error {
	pr := newPrinter(c.stdout)
	sum, err := c.client().Promote(ctx, pr.print)
	if err != nil {
		return interrupted(ctx, "promote", err)
	}
	pr.summary(sum)
	return nil
}

func (c *cli) runRollback(ctx context.Context, wait bool) error {
	pr := newPrinter(c.stdout)
	sum, err := c.client().Rollback(ctx, wait, pr.print)
	if err != nil {
		return interrupted(ctx, "rollback", err)
	}
	pr.summary(sum)
	return nil
}

func (c *cli) runStop(ctx context.Context) error {
	return interrupted(ctx, "stop", c.client().Stop(ctx, newPrinter(c.stdout).print))
}

// interrupted says what an interrupt (SIGINT, SIGTERM: ctx ended) of a
// command that was following the supervisor's progress means: only the
// command stopped following; the supervisor goes on with what it was
// asked, and launcher status shows where it stands. Other errors pass.
func interrupted(ctx context.Context, what string, err error) error {
	if err == nil || ctx.Err() == nil || !errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%s: interrupted; only this command stopped: the supervisor carries the %s on (launcher status shows it)", what, what)
}

// printer prints progress as `launcher upgrade` does: the seconds since
// the command, two spaces, the step. A typed step carries the
// supervisor's own clock; a line from an older supervisor gets the CLI's.
type printer struct {
	w     io.Writer
	start time.Time
	last  string
	json  bool // one JSON object per step
}

func newPrinter(w io.Writer) *printer { return &printer{w: w, start: time.Now()} }

func (pr *printer) print(p supervisor.Progress) {
	line := p.String()
	if line == "" {
		return
	}
	if pr.json {
		if p.Step == "" {
			return // an older supervisor's line: no JSON to give
		}
		b, _ := json.Marshal(p)
		fmt.Fprintf(pr.w, "%s\n", b)
		pr.last = line
		return
	}
	secs := time.Since(pr.start).Seconds()
	if p.Step != "" {
		secs = p.Elapsed.Seconds()
	}
	fmt.Fprintf(pr.w, "%6.3fs  %s\n", secs, line)
	pr.last = line
}

// summary prints a command's summary unless it repeats the last step (an
// upgrade with --wait ends with what it waited for).
func (pr *printer) summary(p supervisor.Progress) {
	if p.String() != pr.last {
		pr.print(p)
	}
}

func (c *cli) runStatus(ctx context.Context, o statusOptions) error {
	client := c.client()
	clear := o.watch && isTerminal(c.stdout)
	for first := true; ; first = false {
		st, err := client.Status(ctx)
		if err != nil {
			if o.watch && ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch {
		case clear:
			fmt.Fprint(c.stdout, "\x1b[H\x1b[2J") // home and clear: refresh in place
		case o.watch && !first:
			fmt.Fprintln(c.stdout) // to a pipe or a file: one snapshot after the other
		}
		if o.json {
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			enc.Encode(st)
		} else {
			printStatus(c.stdout, st)
		}
		if !o.watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.interval):
		}
	}
}

func printStatus(w io.Writer, st supervisor.Status) {
	fmt.Fprintf(w, "supervisor pid %d  listen %s  handover %s  state %s\n\n",
		st.PID, strings.Join(st.Listen, ","), st.Handover, st.StateDir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GEN\tVERSION\tSTATE\tPIDS\tINFLIGHT\tCONNS\tRESTARTS\tAGE")
	for _, g := range st.Generations {
		pids := joinPIDs(g.PIDs)
		if pids == "" {
			pids = "-"
		}
		state := g.State
		if g.Weight > 0 && g.Weight < 100 {
			state += fmt.Sprintf(" (canary: %d%% of new connections)", g.Weight)
		}
		if g.ProbationUntil != nil {
			state += fmt.Sprintf(" (probation %s left)", time.Until(*g.ProbationUntil).Round(100*time.Millisecond))
		}
		inflight, conns := fmt.Sprint(g.InflightRequests), fmt.Sprint(g.OpenConnections)
		if len(g.Unanswered) > 0 {
			// Counts without the workers that did not answer: at least.
			inflight, conns = inflight+"+?", conns+"+?"
			state += fmt.Sprintf(" (not answering: pid %s)", joinPIDs(g.Unanswered))
		}
		if len(g.Paused) > 0 {
			state += fmt.Sprintf(" (paused, steered away from: pid %s)", joinPIDs(g.Paused))
		}
		if len(g.NotRestarted) > 0 {
			state += fmt.Sprintf(" (worker %s not restarted: crash loop)", joinPIDs(g.NotRestarted))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", g.Generation, g.Version, state,
			pids, inflight, conns, g.Restarts,
			time.Since(g.Started).Round(time.Second))
	}
	tw.Flush()
	// An upgrade on trial has no report yet: the history's last is the
	// one before, which read as this one's verdict (a new user's trial).
	// One blank line under the table, then each line ends with its own
	// newline: a line alone was left without one (a new user's trial).
	blank := "\n"
	for _, g := range st.Generations {
		if g.ProbationUntil != nil || g.State == supervisor.StateActive && g.Weight > 0 && g.Weight < 100 {
			fmt.Fprintf(w, "%supgrade under way: generation %d (%s) on trial, no verdict yet\n", blank, g.Generation, g.Version)
			blank = ""
		}
	}
	if len(st.Waiting) > 0 {
		fmt.Fprintf(w, "%supgrade asked while the first generation starts, waiting for it to serve: %s (the first goes on, the others are refused then)\n", blank, strings.Join(st.Waiting, ", "))
		blank = ""
	}
	if n := len(st.History); n > 0 {
		r := st.History[n-1]
		fmt.Fprintf(w, "%slast upgrade: generation %d (%s) from generation %d (%s): %s", blank, r.Generation, r.Version, r.From, r.FromVersion, r.Verdict)
		if r.Reason != "" {
			fmt.Fprintf(w, " (%s)", r.Reason)
		}
		fmt.Fprintf(w, "; status --json has the last %d reports\n", n)
	}
}

// isTerminal reports whether w is a terminal (its TCGETS ioctl answers),
// where status --watch may clear the screen.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// joinPIDs lists pids with commas.
func joinPIDs(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}
