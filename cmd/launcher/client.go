package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

func cmdUpgrade(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("upgrade", "upgrade [--wait] [VERSION|PATH]", stderr)
	stateDir := stateDirFlag(fs)
	wait := fs.Bool("wait", false, "also wait until the old generation has drained and exited")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("upgrade: one VERSION or PATH at most, got %q", fs.Args())
	}
	arg := fs.Arg(0)
	if strings.Contains(arg, "/") && !filepath.IsAbs(arg) {
		// A path is the caller's, relative to the caller's directory, not the
		// supervisor's.
		abs, err := filepath.Abs(arg)
		if err != nil {
			return fmt.Errorf("upgrade: %w", err)
		}
		arg = abs
	}
	return callAndPrint(ctx, *stateDir, "upgrade", arg, *wait, stdout)
}

func cmdRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rollback", "rollback [--wait]", stderr)
	stateDir := stateDirFlag(fs)
	wait := fs.Bool("wait", false, "also wait until the generation rolled back from has exited")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("rollback: takes no argument")
	}
	return callAndPrint(ctx, *stateDir, "rollback", "", *wait, stdout)
}

func cmdStop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stop", "stop", stderr)
	stateDir := stateDirFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("stop: takes no argument")
	}
	return callAndPrint(ctx, *stateDir, "stop", "", false, stdout)
}

// callAndPrint runs a command, printing progress lines as they come.
func callAndPrint(ctx context.Context, stateDir, cmd, arg string, wait bool, stdout io.Writer) error {
	start := time.Now()
	progress := func(line string) {
		fmt.Fprintf(stdout, "%6.3fs  %s\n", time.Since(start).Seconds(), line)
	}
	m, err := supervisor.Call(ctx, stateDir, cmd, arg, wait, progress)
	if err != nil {
		return err // the supervisor's message already names the command
	}
	if m.Text != "" {
		fmt.Fprintf(stdout, "%6.3fs  %s\n", time.Since(start).Seconds(), m.Text)
	}
	return nil
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [--json] [--watch]", stderr)
	stateDir := stateDirFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	watch := fs.Bool("watch", false, "refresh every second until interrupted")
	interval := fs.Duration("interval", time.Second, "refresh interval for --watch")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("status: takes no argument")
	}
	for {
		st, err := supervisor.GetStatus(ctx, *stateDir)
		if err != nil {
			if *watch && ctx.Err() != nil {
				return nil
			}
			return err
		}
		if *watch {
			fmt.Fprint(stdout, "\x1b[H\x1b[2J") // home and clear: refresh in place
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(st)
		} else {
			printStatus(stdout, st)
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

func printStatus(w io.Writer, st supervisor.Status) {
	fmt.Fprintf(w, "supervisor pid %d  listen %s  handover %s  state %s\n\n",
		st.PID, strings.Join(st.Listen, ","), st.Handover, st.StateDir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GEN\tVERSION\tSTATE\tPIDS\tINFLIGHT\tCONNS\tRESTARTS\tAGE")
	for _, g := range st.Generations {
		pids := make([]string, len(g.PIDs))
		for i, p := range g.PIDs {
			pids[i] = fmt.Sprint(p)
		}
		if len(pids) == 0 {
			pids = []string{"-"}
		}
		state := g.State
		if g.ProbationUntil != nil {
			state += fmt.Sprintf(" (probation %s left)", time.Until(*g.ProbationUntil).Round(100*time.Millisecond))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", g.Generation, g.Version, state,
			strings.Join(pids, ","), g.InflightRequests, g.OpenConnections, g.Restarts,
			time.Since(g.Started).Round(time.Second))
	}
	tw.Flush()
}
