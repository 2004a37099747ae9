// Command launcher runs a Go network service as generations of worker
// processes and upgrades it without dropping a request.
//
//	launcher start [flags] -- COMMAND [ARGS...]   foreground supervisor
//	launcher upgrade [--wait] [VERSION|PATH]      no argument: re-resolve COMMAND (= SIGHUP)
//	launcher rollback [--wait]                    back to the previous release
//	launcher status [--json] [--watch]            generations, versions, pids, in-flight
//	launcher stop                                 drain everything, then exit
//	launcher demo [-v] [--workers N] [--faults]   build two versions, upgrade under load, show the result
//	launcher completion bash|zsh|fish             a shell completion script
//	launcher man DIR                              write the man pages into DIR
//
// Every command takes --state-dir (or LAUNCHER_STATE_DIR) and --help;
// flags go anywhere on the line, except after start's COMMAND, whose
// arguments are the service's.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/launcherd/launcher/supervisor"
)

// usageError is an error in the command line: exit status 2. An empty one
// has already been reported.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// usagef returns a usageError.
func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(newCLI(os.Stdout, os.Stderr).run(os.Args[1:]))
}

// run runs the command line args and returns the exit status: 0, 1 when
// the command failed, 2 for a bad command line. Errors are one line on
// stderr.
func (c *cli) run(args []string) int {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	c.releaseSignals = cancel
	root := c.command()
	if args == nil {
		args = []string{} // nil makes cobra read os.Args
	}
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		plainUsages(root)
	}
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ue usageError
	switch {
	case errors.As(err, &ue) && ue.msg == "":
		return 2
	case errors.As(err, &ue) || !c.acted:
		// Cobra's own errors (arguments of its completion command, a
		// required flag) come before any action: the command line's.
		fmt.Fprintf(c.stderr, "launcher: %v\n", err)
		return 2
	default:
		fmt.Fprintf(c.stderr, "launcher: %v\n", err)
		return 1
	}
}

// plainUsages drops the backticks from every flag's usage under cmd: in
// --help they name the flag's value (`DIR`), but a completion shows the
// usage as it is.
func plainUsages(cmd *cobra.Command) {
	strip := func(f *pflag.Flag) { f.Usage = strings.ReplaceAll(f.Usage, "`", "") }
	cmd.Flags().VisitAll(strip)
	cmd.PersistentFlags().VisitAll(strip)
	for _, sub := range cmd.Commands() {
		plainUsages(sub)
	}
}

// defaultStateDir is LAUNCHER_STATE_DIR, else /run/launcher for root, else
// $XDG_RUNTIME_DIR/launcher, else /tmp/launcher-UID.
func defaultStateDir() string {
	if d := os.Getenv("LAUNCHER_STATE_DIR"); d != "" {
		return d
	}
	if os.Getuid() == 0 {
		return "/run/launcher"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "launcher")
	}
	return filepath.Join(os.TempDir(), "launcher-"+strconv.Itoa(os.Getuid()))
}

// client returns a client for the state directory of the command line.
func (c *cli) client() supervisor.Client {
	return supervisor.Client{StateDir: c.stateDirOrDefault()}
}

// stateDirOrDefault is --state-dir, or defaultStateDir when not given.
func (c *cli) stateDirOrDefault() string {
	if c.stateDir != "" {
		return c.stateDir
	}
	return defaultStateDir()
}
