// Command launcher runs a Go network service as generations of worker
// processes and upgrades it without dropping a request.
//
//	launcher start  [flags] -- COMMAND [ARGS...]   foreground supervisor
//	launcher upgrade [VERSION|PATH]                 no argument: re-resolve COMMAND (= SIGHUP)
//	launcher rollback                               back to the previous release
//	launcher status [--json] [--watch]              generations, versions, pids, in-flight
//	launcher stop                                   drain everything, then exit
//	launcher demo                                   build two versions, upgrade under load, show the result
//
// Every command takes --state-dir (or LAUNCHER_STATE_DIR) and --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

const usage = `launcher: zero-downtime launcher for Go network services (SO_REUSEPORT, no fd passing)

Usage:
  launcher start [flags] -- COMMAND [ARGS...]   run the supervisor in the foreground
  launcher upgrade [--wait] [VERSION|PATH]      start a new generation and hand traffic to it
  launcher rollback [--wait]                    go back to the previous release
  launcher status [--json] [--watch]            show generations, versions, pids, in-flight work
  launcher stop                                 drain every generation, then stop the supervisor
  launcher demo [--faults]                      build hello v1/v2, upgrade under load, print the result
                                                (--faults: a crash in probation, a killed supervisor)

Run 'launcher COMMAND --help' for a command's flags.
`

// usageError is an error in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// usagef returns a usageError.
func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "start":
		cancel() // start handles its own signals
		err = cmdStart(rest, stderr)
	case "upgrade":
		err = cmdUpgrade(ctx, rest, stdout, stderr)
	case "rollback":
		err = cmdRollback(ctx, rest, stdout, stderr)
	case "status":
		err = cmdStatus(ctx, rest, stdout, stderr)
	case "stop":
		err = cmdStop(ctx, rest, stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, rest, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "launcher: unknown command %q (see launcher --help)\n", cmd)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "launcher: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "launcher: %v\n", err)
		return 1
	}
}

// newFlags returns a flag set that reports errors as one line.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: launcher %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; a bad flag becomes one usage line, and --help prints
// the command's flags on stdout.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return err
	}
	if err != nil {
		return usagef("%s: %v (see launcher %s --help)", fs.Name(), err, fs.Name())
	}
	return nil
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

func stateDirFlag(fs *flag.FlagSet) *string {
	return fs.String("state-dir", defaultStateDir(), "state directory of the supervisor (env LAUNCHER_STATE_DIR)")
}
