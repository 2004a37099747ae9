package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/launcherd/launcher/internal/ticketkeys"
	"github.com/launcherd/launcher/supervisor"
)

func (c *cli) startCommand() *cobra.Command {
	var (
		cfg     supervisor.Config
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "start [flags] -- COMMAND [ARGS...]",
		Short: "run the supervisor in the foreground",
		Long: `Run the supervisor in the foreground: COMMAND as the first generation of
--workers processes, upgraded by launcher upgrade or SIGHUP, stopped by
launcher stop, SIGTERM or SIGINT. It writes STATE_DIR/launcher.pid; its PID
never changes across upgrades. On a state directory whose supervisor was
killed, it adopts the workers still serving instead of starting new ones.
It exits 0 when stopped (also while its first generation starts or workers
are adopted), or 1 if the first generation cannot start.

Flags come before COMMAND: everything from COMMAND on is the service's.`,
		Example: "  launcher start --listen 127.0.0.1:8080 --releases /srv/hello/releases -- /srv/hello/releases/v1/hello -delay 1ms   # args after -- are the app's",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("start: no COMMAND: launcher start [flags] -- COMMAND [ARGS...]")
			}
			if len(cfg.Listen) == 0 {
				return usagef("start: no listen address: give --listen ADDR")
			}
			return nil
		},
		RunE: c.act(func(cmd *cobra.Command, args []string) error {
			// In Config zero means the default; on the command line a
			// zero timeout is a mistake, not a request for 30s.
			for _, f := range []struct {
				name string
				v    time.Duration
			}{{"ready-timeout", cfg.ReadyTimeout}, {"drain-timeout", cfg.DrainTimeout}} {
				if f.v <= 0 {
					return usagef("start: --%s %s: want more than 0", f.name, f.v)
				}
			}
			if cfg.Settle < 0 {
				return usagef("start: --settle %s: want 0 (the default) or more", cfg.Settle)
			}
			// Given empty, each would be taken as not given at all.
			for _, name := range []string{"releases", "current", "metrics"} {
				if v, _ := cmd.Flags().GetString(name); v == "" && cmd.Flags().Changed(name) {
					return usagef("start: --%s \"\": empty (leave it out if there is none)", name)
				}
			}
			if cfg.MetricsAddr != "" && slices.Contains(cfg.Listen, cfg.MetricsAddr) {
				return usagef("start: --metrics %s: also a --listen address: give the metrics another port", cfg.MetricsAddr)
			}
			if cfg.MaxDraining < 1 {
				return usagef("start: --max-draining %d: want at least 1", cfg.MaxDraining)
			}
			if cfg.Probation < 0 {
				return usagef("start: --probation %s: want 0 (off) or more", cfg.Probation)
			}
			if cfg.Probation > 0 && cmd.Flags().Changed("probation") && cfg.Handover != "" && cfg.Handover != supervisor.HandoverSteer {
				return usagef("start: --probation %s: steer handover only (--handover %s keeps no generation on standby)", cfg.Probation, cfg.Handover)
			}
			if cfg.Probation == 0 {
				cfg.Probation = supervisor.NoProbation // in Config, zero is the default
			}
			if cfg.Current != "" {
				// The supervisor replaces what is there by a symlink at
				// every upgrade: a file or directory would be lost.
				if fi, err := os.Stat(filepath.Dir(cfg.Current)); err != nil || !fi.IsDir() {
					return usagef("start: --current %s: its directory %s does not exist", cfg.Current, filepath.Dir(cfg.Current))
				}
				if fi, err := os.Lstat(cfg.Current); err == nil && fi.Mode()&os.ModeSymlink == 0 {
					what := "file"
					if fi.IsDir() {
						what = "directory"
					}
					return usagef("start: --current %s: a %s is there, not a symlink; the supervisor repoints that symlink at every upgrade: give the path of a symlink or of nothing yet", cfg.Current, what)
				}
			}
			if cfg.KeepExited < 0 {
				return usagef("start: --keep-exited %s: want 0 (off) or more", cfg.KeepExited)
			}
			if cfg.KeepExited == 0 {
				cfg.KeepExited = supervisor.NoKeepExited // in Config, zero is the default
			}
			if cfg.TicketRotate < time.Second {
				return usagef("start: --tls-ticket-rotate %s: want 1s or more", cfg.TicketRotate)
			}
			if cfg.TicketLifetime < cfg.TicketRotate {
				return usagef("start: --tls-ticket-lifetime %s: want at least --tls-ticket-rotate (%s)", cfg.TicketLifetime, cfg.TicketRotate)
			}
			if r := cfg.MaxErrorRatio; r < 0 || r > 1 {
				return usagef("start: --max-error-ratio %g: want 0 (off) to 1 (a share of requests: 0.05 is 5 points)", r)
			}
			for _, f := range []struct {
				name string
				v    *float64
			}{{"max-error-ratio", &cfg.MaxErrorRatio}, {"max-latency-ratio", &cfg.MaxLatencyRatio}} {
				if *f.v < 0 {
					return usagef("start: --%s %g: want 0 (off) or more", f.name, *f.v)
				}
				if *f.v == 0 {
					*f.v = supervisor.NoJudge // in Config, zero is the default
				}
			}
			if cfg.MinRequests < 1 {
				return usagef("start: --min-requests %d: want at least 1", cfg.MinRequests)
			}
			if cfg.Workers < 1 {
				return usagef("start: --workers %d: want at least 1", cfg.Workers)
			}
			cfg.Command = args
			cfg.StateDir = c.stateDirOrDefault()
			c.releaseSignals() // start handles its own
			return c.start(cfg, verbose)
		}),
	}
	// Everything from COMMAND on is the service's: its flags are not ours.
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringArrayVar(&cfg.Listen, "listen", nil, "TCP address `ADDR` every worker binds with SO_REUSEPORT (repeatable)")
	f.StringVar(&cfg.MetricsAddr, "metrics", "", "serve /metrics and /healthz of the supervisor and all generations on this address")
	f.StringVar(&cfg.Releases, "releases", "", "releases directory: DIR/VERSION/NAME, NAME = file name of COMMAND's target")
	f.StringVar(&cfg.Current, "current", "", "symlink repointed to the release directory once a new generation serves (a file or directory there is refused)")
	f.IntVar(&cfg.Workers, "workers", 1, "worker processes per generation")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "an old worker cuts what is left of its drain after this, and is killed 1s later if still there (more than 0)")
	f.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 30*time.Second, "give up on a new generation not ready after this (more than 0)")
	f.StringVar(&cfg.Handover, "handover", supervisor.HandoverSteer, "how the old generation stops accepting: steer (lossless, unprivileged), migrate (close, with the kernel's net.ipv4.tcp_migrate_req=1) or close (naive, for comparison)")
	f.IntVar(&cfg.MaxDraining, "max-draining", 4, "refuse an upgrade that would leave more generations than this draining at once (at least 1)")
	f.BoolVar(&cfg.StartInTurn, "start-in-turn", false, "start a new generation's workers one after the other, each once the one before has initialised, rather than all at once")
	f.DurationVar(&cfg.Settle, "settle", 0, "an old accept queue must stay empty this long before it closes (0: 2ms, 50ms for workers of an older library)")
	f.DurationVar(&cfg.Probation, "probation", supervisor.DefaultProbation, "after an upgrade, keep the previous generation on standby this long: if the new one crashes or the judge finds it worse (see --max-error-ratio, --max-latency-ratio) meanwhile, traffic goes back to it at once (0 disables; steer handover only)")
	f.Float64Var(&cfg.MaxErrorRatio, "max-error-ratio", supervisor.DefaultMaxErrorRatio, "during a canary or probation, roll back if the new generation's ratio of 5xx answers exceeds the old one's, over the same window, by more than this (0.05: 5 points; 0 disables)")
	f.Float64Var(&cfg.MaxLatencyRatio, "max-latency-ratio", supervisor.DefaultMaxLatencyRatio, "during a canary or probation, roll back if the new generation's p99 latency exceeds this many times the old one's (both counted as at least 10ms; 0 disables)")
	f.IntVar(&cfg.MinRequests, "min-requests", supervisor.DefaultMinRequests, "requests the new generation must have served in the window before it is judged")
	f.DurationVar(&cfg.KeepExited, "keep-exited", supervisor.DefaultKeepExited, "with --metrics: keep serving an exited worker's counters and histograms, frozen at their final values, this long, so scrapes see its last requests (0: drop them at exit)")
	f.DurationVar(&cfg.TicketRotate, "tls-ticket-rotate", ticketkeys.DefaultRotate, "make a new TLS session-ticket key for the workers this often (new tickets use it; older keys still decrypt)")
	f.DurationVar(&cfg.TicketLifetime, "tls-ticket-lifetime", ticketkeys.DefaultLifetime, "drop TLS session-ticket keys this old: their tickets no longer resume")
	f.StringVar(&cfg.TicketKeyFile, "tls-ticket-key-file", "", "use the operator's TLS session-ticket keys from `FILE` (one base64 32-byte key a line, the current first; mode 0600 or 0400), read again at every upgrade, instead of made ones")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	cmd.MarkFlagDirname("releases")
	cmd.RegisterFlagCompletionFunc("handover", cobra.FixedCompletions(
		[]cobra.Completion{supervisor.HandoverSteer, supervisor.HandoverMigrate, supervisor.HandoverClose},
		cobra.ShellCompDirectiveNoFileComp))
	noFiles(cmd, "listen", "metrics", "workers", "drain-timeout", "ready-timeout", "max-draining", "settle", "probation", "keep-exited",
		"max-error-ratio", "max-latency-ratio", "min-requests", "tls-ticket-rotate", "tls-ticket-lifetime")
	return cmd
}

// runStart runs the supervisor until it stops.
func (c *cli) runStart(cfg supervisor.Config, verbose bool) error {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log
	// The supervisor is one event loop and its I/O: a second P only has
	// idle threads spin and wake each other, a fifth of its CPU per
	// upgrade on two cores (4.5–5 ms against 3.75–4 ms). GOMAXPROCS in
	// its environment, which its workers inherit, still decides.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	s, err := supervisor.New(cfg)
	if ce := (*supervisor.ConfigError)(nil); errors.As(err, &ce) {
		return usagef("start: %v", err) // a bad flag value: exit 2
	}
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
					go func() { // ends with the upgrade, bounded by ctx
						sum, err := s.Upgrade(ctx, "", false, nil)
						if err != nil {
							log.Error("SIGHUP upgrade", "err", err)
							return
						}
						log.Info("SIGHUP upgrade: " + sum.String())
					}()
					continue
				}
				log.Info("signal: stopping", "signal", sig.String())
				go s.Stop(context.Background()) // ends when every generation has drained
			}
		}
	}()
	if err := s.Run(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
