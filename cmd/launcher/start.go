package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/launcherd/launcher/supervisor"
)

// listFlag is a repeatable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func cmdStart(args []string, stderr io.Writer) error {
	fs := newFlags("start", "start [flags] -- COMMAND [ARGS...]", stderr)
	var listen listFlag
	fs.Var(&listen, "listen", "TCP address every worker binds with SO_REUSEPORT (repeatable)")
	stateDir := stateDirFlag(fs)
	metricsAddr := fs.String("metrics", "", "serve /metrics and /healthz of the supervisor and all generations on this address")
	releases := fs.String("releases", "", "releases directory: DIR/VERSION/NAME, NAME = file name of COMMAND's target")
	current := fs.String("current", "", "symlink repointed to the release directory after a good upgrade")
	workers := fs.Int("workers", 1, "worker processes per generation")
	drainTimeout := fs.Duration("drain-timeout", 30*time.Second, "an old worker cuts what is left of its drain after this, and is killed 1s later if still there")
	readyTimeout := fs.Duration("ready-timeout", 30*time.Second, "give up on a new generation not ready after this")
	handover := fs.String("handover", supervisor.HandoverSteer, "how the old generation stops accepting: steer (lossless, unprivileged), migrate (close, with the kernel's net.ipv4.tcp_migrate_req=1) or close (naive, for comparison)")
	maxDraining := fs.Int("max-draining", 4, "refuse an upgrade that would leave more generations than this draining at once")
	settle := fs.Duration("settle", 50*time.Millisecond, "an old accept queue must stay empty this long before it closes")
	probation := fs.Duration("probation", supervisor.DefaultProbation, "after an upgrade, keep the previous generation on standby this long: if the new one crashes meanwhile, traffic goes back to it at once (0 disables; steer handover only)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := parse(fs, args); err != nil {
		return err
	}
	command := fs.Args()
	if len(command) == 0 {
		return usagef("start: no COMMAND: launcher start [flags] -- COMMAND [ARGS...]")
	}
	if *probation < 0 {
		return usagef("start: --probation %s: want 0 (off) or more", *probation)
	}
	if *probation == 0 {
		*probation = -1 // Config: negative disables, zero is the default
	}
	if *workers < 1 {
		return usagef("start: --workers %d: want at least 1", *workers)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s, err := supervisor.New(supervisor.Config{
		Command: command, Listen: listen, StateDir: *stateDir, MetricsAddr: *metricsAddr,
		Releases: *releases, Current: *current, Workers: *workers,
		DrainTimeout: *drainTimeout, ReadyTimeout: *readyTimeout,
		Handover: *handover, Settle: *settle, MaxDraining: *maxDraining, Probation: *probation, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() { // signal actor: ends with ctx
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-sigs:
				if sig == syscall.SIGHUP {
					go func() {
						sum, err := s.Upgrade(ctx, "", false, func(string) {})
						if err != nil {
							log.Error("SIGHUP upgrade", "err", err)
							return
						}
						log.Info("SIGHUP upgrade: " + sum)
					}()
					continue
				}
				log.Info("signal: stopping", "signal", sig.String())
				go s.Stop(context.Background())
			}
		}
	}()
	if err := s.Run(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
