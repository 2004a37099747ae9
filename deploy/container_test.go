package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	dockerfile = "container/Dockerfile"
	podYAML    = "container/pod.yaml"
)

// dockerInstructions returns the Dockerfile's instructions (continuation
// lines joined, comments dropped) as [INSTRUCTION, rest] pairs.
func dockerInstructions(t testing.TB) [][2]string {
	t.Helper()
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		cur += trimmed
		if cur != "" {
			ins, rest, _ := strings.Cut(cur, " ")
			out = append(out, [2]string{strings.ToUpper(ins), strings.TrimSpace(rest)})
		}
		cur = ""
	}
	return out
}

// imageEntrypoint returns the final stage's ENTRYPOINT; it fails the test
// unless it is in exec form (JSON), so that launcher is PID 1 and gets the
// SIGTERM itself, not a shell.
func imageEntrypoint(t testing.TB) []string {
	t.Helper()
	var entry []string
	var stages, builds int
	for _, in := range dockerInstructions(t) {
		switch in[0] {
		case "FROM":
			stages++
			entry = nil
		case "RUN":
			// Every package the image builds exists.
			for _, f := range strings.Fields(in[1]) {
				if strings.HasPrefix(f, "./cmd/") {
					builds++
					if _, err := os.Stat(filepath.Join("..", f)); err != nil {
						t.Errorf("Dockerfile builds %s: %v", f, err)
					}
				}
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in[1]), &entry); err != nil {
				t.Fatalf("ENTRYPOINT %s: not the exec form (a JSON array): %v", in[1], err)
			}
		}
	}
	if stages < 2 || builds < 2 {
		t.Errorf("Dockerfile: %d stages building %d commands, want a multi-stage build of launcher and the app", stages, builds)
	}
	if len(entry) < 2 || filepath.Base(entry[0]) != "launcher" || entry[1] != "start" {
		t.Fatalf("ENTRYPOINT %q: want launcher start ...", entry)
	}
	return entry
}

// addrPort returns the port of a listen address such as ":8080".
func addrPort(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// TestContainerEntrypoint runs the image's ENTRYPOINT as the container
// would (the image's file layout rebuilt in a temporary root: the release
// of the RUN step, the current symlink, the state dir), checks it serves
// hello and /healthz, then sends it SIGTERM with a request in flight, as
// docker stop or the kubelet would: the request completes, the supervisor
// exits 0.
func TestContainerEntrypoint(t *testing.T) {
	t.Parallel()
	entry := imageEntrypoint(t)
	b := buildBinaries(t)
	root := shortTempDir(t)
	addr, metrics := freeAddr(t), freeAddr(t)
	remap := func(w string) string {
		switch {
		case w == "/usr/local/bin/launcher":
			return b.launcher
		case w == ":8080":
			return addr
		case w == ":9100":
			return metrics
		case strings.HasPrefix(w, "/srv/"), strings.HasPrefix(w, "/run/"):
			return filepath.Join(root, w)
		}
		return w
	}
	args := make([]string, len(entry))
	for i, w := range entry {
		args[i] = remap(w)
	}
	releases := flagValue(args, "releases")
	linkOrCopy(t, helloPath(b.releases, "v1"), helloPath(releases, "v1"))
	if err := os.Symlink("releases/v1", flagValue(args, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(flagValue(args, "state-dir")), 0o755); err != nil {
		t.Fatal(err)
	}
	if flagValue(args, "listen") != addr || flagValue(args, "metrics") != metrics {
		t.Fatalf("ENTRYPOINT %q: want --listen :8080 and --metrics :9100", entry)
	}

	p := startLauncher(t, args[0], addr, flagValue(args, "state-dir"), nil, args[1:]...)
	wantHello(t, addr, "v1")
	resp, err := http.Get("http://" + metrics + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}

	type result struct {
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + addr + "/sleep?d=1s")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		slow <- result{strings.TrimSpace(string(body)), err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for st := p.status(); st.Generations[0].InflightRequests == 0; st = p.status() {
		if time.Now().After(deadline) {
			t.Fatal("the slow request is not in flight after 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sent := time.Now()
	p.Signal(syscall.SIGTERM)
	r := <-slow
	if r.err != nil || r.body != "hello from v1" {
		t.Errorf("request in flight at SIGTERM: %q, %v; want hello from v1", r.body, r.err)
	}
	if err := p.wait(15 * time.Second); err != nil {
		t.Errorf("launcher after SIGTERM: %v, want exit 0", err)
	}
	t.Logf("stopped %s after SIGTERM, the request in flight served", time.Since(sent).Round(time.Millisecond))
}

// podSpec is the part of pod.yaml the test checks.
type podSpec struct {
	Kind string `json:"kind"`
	Spec struct {
		TerminationGracePeriodSeconds int `json:"terminationGracePeriodSeconds"`
		Containers                    []struct {
			Image string `json:"image"`
			Ports []struct {
				Name          string `json:"name"`
				ContainerPort int    `json:"containerPort"`
			} `json:"ports"`
			ReadinessProbe *struct {
				HTTPGet *struct {
					Path string `json:"path"`
					Port any    `json:"port"`
				} `json:"httpGet"`
			} `json:"readinessProbe"`
			Lifecycle struct {
				PreStop struct {
					Sleep struct {
						Seconds int `json:"seconds"`
					} `json:"sleep"`
				} `json:"preStop"`
			} `json:"lifecycle"`
			VolumeMounts []struct {
				Name      string `json:"name"`
				MountPath string `json:"mountPath"`
			} `json:"volumeMounts"`
		} `json:"containers"`
		Volumes []struct {
			Name string `json:"name"`
		} `json:"volumes"`
	} `json:"spec"`
}

// TestPodManifest parses pod.yaml (with Python's yaml module: the
// standard library has no YAML parser) and checks it against the image's
// ENTRYPOINT: the grace period covers preStop plus --drain-timeout, the
// readiness probe is the supervisor's /healthz on the --metrics port, the
// --listen port is declared, the state dir is on a mounted volume.
func TestPodManifest(t *testing.T) {
	t.Parallel()
	// Debian's python3-yaml is for Debian's python3: prefer it over
	// whatever python3 comes first on PATH (pyenv, a virtualenv).
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		python = needTool(t, "python3", "python3-yaml")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c",
		"import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)", podYAML).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No module named 'yaml'") {
			missing(t, "python3's yaml module", "python3-yaml")
		}
		t.Fatalf("parse %s: %v\n%s", podYAML, err, out)
	}
	var docs []podSpec
	if err := json.Unmarshal(out, &docs); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].Kind != "Pod" || len(docs[0].Spec.Containers) != 1 {
		t.Fatalf("%s: want one Pod with one container, got %s", podYAML, out)
	}
	pod, c := docs[0], docs[0].Spec.Containers[0]

	entry := imageEntrypoint(t)
	drain, err := time.ParseDuration(flagValue(entry, "drain-timeout"))
	if err != nil {
		t.Fatalf("ENTRYPOINT --drain-timeout: %v", err)
	}
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if grace < preStop+drain+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %s < preStop %s + --drain-timeout %s + 5s", grace, preStop, drain)
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
		ports[strconv.Itoa(p.ContainerPort)] = p.ContainerPort
	}
	if listen := addrPort(t, flagValue(entry, "listen")); ports[strconv.Itoa(listen)] == 0 {
		t.Errorf("no container port for --listen %d", listen)
	}
	metrics := addrPort(t, flagValue(entry, "metrics"))
	switch rp := c.ReadinessProbe; {
	case rp == nil || rp.HTTPGet == nil:
		t.Error("no readinessProbe.httpGet")
	case rp.HTTPGet.Path != "/healthz" || ports[fmt.Sprint(rp.HTTPGet.Port)] != metrics:
		t.Errorf("readinessProbe GET %s on port %v, want /healthz on the --metrics port %d", rp.HTTPGet.Path, rp.HTTPGet.Port, metrics)
	}
	state := flagValue(entry, "state-dir")
	mounted := false
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(state, strings.TrimSuffix(m.MountPath, "/")+"/") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("--state-dir %s is not under a mounted volume (the supervisor must own it: a subdirectory of an emptyDir)", state)
	}
}
