package deploy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	unitFile    = "systemd/launcher@.service"
	unitEnvFile = "systemd/hello.env"
	// unitInstance is the instance the tests expand the template for.
	unitInstance = "hello"
)

// unit is a parsed systemd unit file: section → key → values, in order.
type unit map[string]map[string][]string

// parseUnit reads a unit file: comments, sections, KEY=VALUE lines and
// backslash continuations (joined with a space, as systemd does).
func parseUnit(t testing.TB, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	var pending string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")) {
			continue
		}
		if strings.HasPrefix(line, "#") && pending != "" {
			continue // systemd skips comment lines inside a continuation
		}
		if strings.HasSuffix(line, `\`) {
			pending += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = strings.Trim(line, "[]")
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not KEY=VALUE in a section: %q", path, n, line)
		}
		u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the single value of key in section; it fails the test if
// the key is missing or repeated.
func (u unit) one(t testing.TB, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s: %d values %q, want one", section, key, len(v), v)
	}
	return v[0]
}

// expandSpecifiers replaces the unit specifiers a template uses.
func expandSpecifiers(t testing.TB, s string) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			t.Fatalf("dangling %% in %q", s)
		}
		switch s[i] {
		case 'i', 'I':
			b.WriteString(unitInstance)
		case '%':
			b.WriteByte('%')
		default:
			t.Fatalf("specifier %%%c in %q: teach the test about it", s[i], s)
		}
	}
	return b.String()
}

// readEnvFile parses a systemd EnvironmentFile: KEY=VALUE lines, comments.
func readEnvFile(t testing.TB, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			t.Fatalf("%s:%d: not KEY=VALUE: %q", path, n+1, line)
		}
		env[k] = v
	}
	return env
}

var (
	wholeVarRE  = regexp.MustCompile(`^\$([A-Za-z_][A-Za-z0-9_]*)$`)
	bracedVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// commandLine expands an Exec line as systemd does for our unit: words
// split on spaces, specifiers, ${VAR} replaced inside a word, a word $VAR
// replaced by the value's words (none if empty), and remap applied to each
// word (the real paths of a test machine).
func commandLine(t testing.TB, exec string, env map[string]string, remap func(string) string) []string {
	t.Helper()
	var out []string
	for _, w := range strings.Fields(expandSpecifiers(t, exec)) {
		if m := wholeVarRE.FindStringSubmatch(w); m != nil {
			out = append(out, strings.Fields(env[m[1]])...)
			continue
		}
		w = bracedVarRE.ReplaceAllStringFunc(w, func(v string) string {
			return env[bracedVarRE.FindStringSubmatch(v)[1]]
		})
		out = append(out, remap(w))
	}
	return out
}

// unitEnvironment returns the environment the unit gives ExecStart: its
// Environment= lines, then envFile (its EnvironmentFile=).
func unitEnvironment(t testing.TB, u unit, envFile string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(expandSpecifiers(t, line)) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	for k, v := range readEnvFile(t, envFile) {
		env[k] = v
	}
	return env
}

// flagValue returns the value of --name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// parseSeconds parses a systemd time span such as 45s, 1min 30s or 90.
func parseSeconds(t testing.TB, s string) time.Duration {
	t.Helper()
	var total time.Duration
	for _, f := range strings.Fields(s) {
		m := regexp.MustCompile(`^([0-9]+)(ms|s|sec|m|min|h)?$`).FindStringSubmatch(f)
		if m == nil {
			t.Fatalf("time span %q: teach the test about it", s)
		}
		n, _ := strconv.Atoi(m[1])
		unit := map[string]time.Duration{"": time.Second, "s": time.Second, "sec": time.Second,
			"ms": time.Millisecond, "m": time.Minute, "min": time.Minute, "h": time.Hour}[m[2]]
		total += time.Duration(n) * unit
	}
	return total
}

// TestSystemdUnit checks launcher@.service with systemd-analyze verify
// (on a copy whose /usr/local/bin/launcher is the launcher just built, as
// verify wants every Exec binary to exist) and checks the settings that
// make upgrades and stops lossless agree with the ExecStart flags.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze := needTool(t, "systemd-analyze", "systemd")
	b := buildBinaries(t)
	src, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"launcher@.service", "launcher@" + unitInstance + ".service"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(src), "/usr/local/bin/launcher", b.launcher)), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, analyze, "verify", "--man=no", path).CombinedOutput()
		cancel()
		// verify exits 0 on many problems it only warns about ("Unknown
		// key", "Failed to parse ... ignoring"): any output is a failure.
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}

	u := parseUnit(t, unitFile)
	for key, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "KillMode": "process", "Restart": "on-failure",
		"RuntimeDirectoryPreserve": "restart", "Delegate": "yes",
	} {
		if got := u.one(t, "Service", key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	if parseSeconds(t, u.one(t, "Service", "WatchdogSec")) <= 0 {
		t.Error("WatchdogSec is not set: the supervisor's WATCHDOG=1 would go unused")
	}
	env := unitEnvironment(t, u, unitEnvFile)
	identity := func(s string) string { return s }
	start := commandLine(t, u.one(t, "Service", "ExecStart"), env, identity)
	if len(start) < 2 || start[0] != "/usr/local/bin/launcher" || start[1] != "start" {
		t.Fatalf("ExecStart %q: want /usr/local/bin/launcher start ...", start)
	}
	stateDir := flagValue(start, "state-dir")
	if want := "/run/" + expandSpecifiers(t, u.one(t, "Service", "RuntimeDirectory")); stateDir != want {
		t.Errorf("--state-dir %s is not the RuntimeDirectory %s", stateDir, want)
	}
	drain, err := time.ParseDuration(flagValue(start, "drain-timeout"))
	if err != nil {
		t.Fatalf("ExecStart --drain-timeout: %v", err)
	}
	if stop := parseSeconds(t, u.one(t, "Service", "TimeoutStopSec")); stop < drain+10*time.Second {
		t.Errorf("TimeoutStopSec=%s < --drain-timeout %s + 10s: systemd would kill a drain in progress", stop, drain)
	}
	ready, err := time.ParseDuration(flagValue(start, "ready-timeout"))
	if err != nil {
		t.Fatalf("ExecStart --ready-timeout: %v", err)
	}
	if ts := parseSeconds(t, u.one(t, "Service", "TimeoutStartSec")); ts <= ready {
		t.Errorf("TimeoutStartSec=%s <= --ready-timeout %s", ts, ready)
	}
	reload := commandLine(t, u.one(t, "Service", "ExecReload"), env, identity)
	// --verdict: a reload fails when the release is rolled back during its
	// probation, not only when it never becomes ready (a new user's trial).
	if strings.Join(reload[:2], " ") != "/usr/local/bin/launcher upgrade" || flagValue(reload, "state-dir") != stateDir || !slices.Contains(reload, "--verdict") {
		t.Errorf("ExecReload %q: want launcher upgrade --verdict --state-dir %s", reload, stateDir)
	}
	cmd := start[slices.Index(start, "--")+1:]
	if want := "/srv/" + unitInstance + "/current/" + unitInstance; len(cmd) == 0 || cmd[0] != want {
		t.Errorf("ExecStart runs %q, want %s", cmd, want)
	}
}

// notifyMsg is one sd_notify datagram.
type notifyMsg struct {
	at  time.Time
	raw string
	kv  map[string]string
}

// notifyRecorder is a NOTIFY_SOCKET: a unixgram socket recording every
// datagram.
type notifyRecorder struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
	more chan struct{} // signalled on each datagram
}

func newNotifyRecorder(t testing.TB, dir string) *notifyRecorder {
	t.Helper()
	r := &notifyRecorder{path: filepath.Join(dir, "notify.sock"), more: make(chan struct{}, 1)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: r.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	done := make(chan struct{})
	go func() { // ends when the cleanup closes the socket
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m := notifyMsg{at: time.Now(), raw: string(buf[:n]), kv: map[string]string{}}
			for _, line := range strings.Split(m.raw, "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					m.kv[k] = v
				}
			}
			r.mu.Lock()
			r.msgs = append(r.msgs, m)
			r.mu.Unlock()
			select {
			case r.more <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return r
}

// waitFor returns the index and message of the first datagram at or after
// index from that has key, waiting up to timeout.
func (r *notifyRecorder) waitFor(t testing.TB, from int, key string, timeout time.Duration) (int, notifyMsg) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		for i := from; i < len(r.msgs); i++ {
			if _, ok := r.msgs[i].kv[key]; ok {
				m := r.msgs[i]
				r.mu.Unlock()
				return i, m
			}
		}
		r.mu.Unlock()
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("no %s= datagram after #%d within %s; got:\n%s", key, from, timeout, r.dump())
		}
	}
}

// all returns a copy of the datagrams so far.
func (r *notifyRecorder) all() []notifyMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notifyMsg(nil), r.msgs...)
}

func (r *notifyRecorder) dump() string {
	var b strings.Builder
	for i, m := range r.all() {
		fmt.Fprintf(&b, "  #%d %s %q\n", i, m.at.Format("15:04:05.000"), m.raw)
	}
	return b.String()
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC.
func monotonicUsec(t testing.TB) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Sec*1e6 + ts.Nsec/1e3
}

// linkOrCopy puts a copy of file src at dst (a hard link when it can).
func linkOrCopy(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Link(src, dst) == nil {
		return
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// repoint atomically points the symlink link at target.
func repoint(t testing.TB, link, target string) {
	t.Helper()
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

// TestSystemdNotify runs the unit's own ExecStart (its specifiers,
// Environment= and the example environment file expanded, the paths moved
// into a temporary root) with a real NOTIFY_SOCKET and WATCHDOG_USEC, as
// systemd would, and checks the sd_notify conversation: READY=1 with a
// STATUS= naming v1 and MAINPID=; on `launcher upgrade v2` RELOADING=1 with
// a current MONOTONIC_USEC= then READY=1 naming v2; the same for the
// unit's ExecReload after repointing current to v3 (the article's kill -HUP
// flow); WATCHDOG=1 at least every WATCHDOG_USEC; on `launcher stop`
// STOPPING=1 and a clean exit.
func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	b := buildBinaries(t)
	root := shortTempDir(t)
	rec := newNotifyRecorder(t, root)

	appRoot := filepath.Join(root, "srv", unitInstance)
	for _, v := range helloVersions {
		linkOrCopy(t, helloPath(b.releases, v), helloPath(filepath.Join(appRoot, "releases"), v))
	}
	if err := os.Symlink("releases/v1", filepath.Join(appRoot, "current")); err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, unitFile)
	env := unitEnvironment(t, u, unitEnvFile)
	addr := freeAddr(t)
	env["LISTEN"], env["METRICS"] = addr, freeAddr(t)
	remap := func(w string) string {
		switch {
		case w == "/usr/local/bin/launcher":
			return b.launcher
		case strings.HasPrefix(w, "/srv/"), strings.HasPrefix(w, "/run/"):
			return filepath.Join(root, w)
		}
		return w
	}
	start := commandLine(t, u.one(t, "Service", "ExecStart"), env, remap)
	reload := commandLine(t, u.one(t, "Service", "ExecReload"), env, remap)
	stateDir := flagValue(start, "state-dir")
	if err := os.MkdirAll(stateDir, 0o700); err != nil { // RuntimeDirectory=
		t.Fatal(err)
	}
	t.Logf("ExecStart: %q", start)

	const watchdog = 400 * time.Millisecond
	p := startLauncher(t, start[0], addr, stateDir, []string{
		"NOTIFY_SOCKET=" + rec.path, "WATCHDOG_USEC=" + strconv.Itoa(int(watchdog/time.Microsecond)), "WATCHDOG_PID=",
	}, start[1:]...)

	i, ready := rec.waitFor(t, 0, "READY", 10*time.Second)
	if !strings.Contains(ready.kv["STATUS"], "v1") {
		t.Errorf("READY=1 with STATUS=%q, want it to name v1", ready.kv["STATUS"])
	}
	if ready.kv["MAINPID"] != strconv.Itoa(p.Pid()) {
		t.Errorf("MAINPID=%q, want the supervisor's pid %d", ready.kv["MAINPID"], p.Pid())
	}
	wantHello(t, addr, "v1")
	if n := len(p.status().Generations[0].PIDs); n != 2 {
		t.Errorf("generation 1 has %d workers, want WORKERS=2 of %s", n, unitEnvFile)
	}
	// NotifyAccess=main rests on this, and the unit's comment says it.
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(strings.Fields(string(text)), " "), "the workers do not inherit NOTIFY_SOCKET") {
		t.Errorf("%s does not say that the workers do not inherit NOTIFY_SOCKET", unitFile)
	}
	for _, pid := range p.status().Generations[0].PIDs {
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("worker %d: %v", pid, err)
		}
		for _, kv := range strings.Split(string(environ), "\x00") {
			if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") {
				t.Errorf("worker %d has %s in its environment: it could notify systemd", pid, kv)
			}
		}
	}

	// upgrade checks one upgrade's RELOADING=1 ... READY=1.
	upgrade := func(version string, args ...string) {
		t.Helper()
		before := monotonicUsec(t)
		out, err := launcherCLI(t, args[0], nil, args[1:]...)
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
		after := monotonicUsec(t)
		var reloading notifyMsg
		i, reloading = rec.waitFor(t, i+1, "RELOADING", 5*time.Second)
		mono, err := strconv.ParseInt(reloading.kv["MONOTONIC_USEC"], 10, 64)
		if err != nil || mono < before || mono > after {
			t.Errorf("RELOADING=1 with MONOTONIC_USEC=%q, want CLOCK_MONOTONIC between %d and %d", reloading.kv["MONOTONIC_USEC"], before, after)
		}
		i, ready = rec.waitFor(t, i+1, "READY", 5*time.Second)
		if !strings.Contains(ready.kv["STATUS"], version) {
			t.Errorf("READY=1 after the upgrade with STATUS=%q, want it to name %s", ready.kv["STATUS"], version)
		}
		wantHello(t, addr, version)
	}
	upgrade("v2", b.launcher, "upgrade", "--state-dir", stateDir, "v2")
	if target, _ := os.Readlink(filepath.Join(appRoot, "current")); filepath.Base(target) != "v2" {
		t.Errorf("current -> %s after the upgrade to v2, want releases/v2 (--current)", target)
	}
	repoint(t, filepath.Join(appRoot, "current"), "releases/v3")
	upgrade("v3", reload...)

	// KillMode=process, Restart=on-failure, RuntimeDirectoryPreserve=
	// restart: a supervisor killed outright (as the watchdog would) is
	// started again by systemd and adopts the workers, which never stopped.
	workers := activePIDs(p.status())
	p.Kill()
	wantHello(t, addr, "v3")
	restarted := time.Now() // no supervisor, no WATCHDOG=1 before this (nor a watchdog armed)
	p = startLauncher(t, start[0], addr, stateDir, []string{
		"NOTIFY_SOCKET=" + rec.path, "WATCHDOG_USEC=" + strconv.Itoa(int(watchdog/time.Microsecond)), "WATCHDOG_PID=",
	}, start[1:]...)
	i, ready = rec.waitFor(t, i+1, "READY", 10*time.Second)
	if !strings.Contains(ready.kv["STATUS"], "v3") || ready.kv["MAINPID"] != strconv.Itoa(p.Pid()) {
		t.Errorf("READY=1 after the restart with STATUS=%q MAINPID=%q, want v3 and pid %d", ready.kv["STATUS"], ready.kv["MAINPID"], p.Pid())
	}
	if got := activePIDs(p.status()); got != workers {
		t.Errorf("workers after the restart %s, want the adopted %s", got, workers)
	}
	wantHello(t, addr, "v3")

	// Let the watchdog run a while, then stop.
	time.Sleep(3 * watchdog)
	if out, err := launcherCLI(t, b.launcher, nil, "stop", "--state-dir", stateDir); err != nil {
		t.Fatalf("launcher stop: %v\n%s", err, out)
	}
	rec.waitFor(t, i+1, "STOPPING", 10*time.Second)
	if err := p.wait(15 * time.Second); err != nil {
		t.Fatalf("launcher after stop: %v", err)
	}

	// The whole conversation, watchdog aside, in order.
	var kinds []string
	var pings []time.Time
	// systemd arms a service's watchdog when its start-up completes
	// (READY=1 for Type=notify; systemd.service(5), WatchdogSec=): the
	// gaps count from the first READY=1, and after the restart from the
	// restarted supervisor's first one (its adoption and, under load, its
	// exec come before it and are no gap).
	var readyAt, restartReady time.Time
	for _, m := range rec.all() {
		for _, k := range []string{"READY", "RELOADING", "STOPPING"} {
			if _, ok := m.kv[k]; ok {
				kinds = append(kinds, k)
			}
		}
		if _, ok := m.kv["READY"]; ok && readyAt.IsZero() {
			readyAt = m.at
		}
		if _, ok := m.kv["READY"]; ok && restartReady.IsZero() && m.at.After(restarted) {
			restartReady = m.at
		}
		if m.kv["WATCHDOG"] == "1" && !readyAt.IsZero() {
			pings = append(pings, m.at)
		}
	}
	want := "READY RELOADING READY RELOADING READY READY STOPPING"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("sd_notify sequence %q, want %q; datagrams:\n%s", got, want, rec.dump())
	}
	last, maxGap := readyAt, time.Duration(0)
	for _, at := range pings {
		if at.After(restarted) && last.Before(restarted) {
			last = restartReady
			if at.Before(restartReady) {
				last = at
			}
		}
		maxGap = max(maxGap, at.Sub(last))
		last = at
	}
	if len(pings) < 3 || maxGap >= watchdog {
		t.Errorf("%d WATCHDOG=1 after READY, largest gap %s; want one at least every WATCHDOG_USEC=%s", len(pings), maxGap, watchdog)
	}
	t.Logf("sd_notify: %s; %d WATCHDOG=1, largest gap %s", strings.Join(kinds, " → "), len(pings), maxGap.Round(time.Millisecond))
}
