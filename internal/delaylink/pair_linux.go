package delaylink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// tunName is the name of the TUN device in each namespace of a Pair.
const tunName = "dl0"

// netnsDir is where ip-netns(8) keeps its named namespaces.
const netnsDir = "/run/netns"

// PairConfig describes two namespaces joined by a delayed link.
type PairConfig struct {
	// Name prefixes the namespaces' names: Name-a and Name-b. Required;
	// it must not name existing namespaces (include the pid, say).
	Name string
	// AddrA and AddrB are the TUN devices' addresses with the prefix of
	// the link, e.g. 10.77.0.1/24 and 10.77.0.2/24. They exist only in
	// the two namespaces.
	AddrA, AddrB netip.Prefix
	// Delay is the one-way delay; the round trip is twice this.
	Delay time.Duration
}

// Pair is two network namespaces, A and B, each with loopback up and a
// TUN device (dl0) that reaches the other through a delayed [Link]. The
// copier runs in this process, which stays in its own namespace.
type Pair struct {
	// NetnsA and NetnsB are the namespaces' names, for `ip netns exec`.
	NetnsA, NetnsB string
	// Link copies packets between the two devices.
	Link *Link
}

// NewPair creates the namespaces, the devices and the link. It needs root
// (CAP_SYS_ADMIN and CAP_NET_ADMIN) and ip(8) from iproute2. What it made
// is removed again when it fails; otherwise Close removes it.
func NewPair(ctx context.Context, cfg PairConfig) (p *Pair, err error) {
	if cfg.Name == "" || !cfg.AddrA.IsValid() || !cfg.AddrB.IsValid() {
		return nil, errors.New("delaylink: PairConfig needs Name, AddrA and AddrB")
	}
	p = &Pair{NetnsA: cfg.Name + "-a", NetnsB: cfg.Name + "-b"}
	var tuns []*os.File
	defer func() {
		if err != nil {
			for _, f := range tuns {
				f.Close()
			}
			p.deleteNetns()
			p = nil
		}
	}()
	for _, ns := range []string{p.NetnsA, p.NetnsB} {
		if err := ip(ctx, "netns", "add", ns); err != nil {
			return nil, err
		}
	}
	for _, side := range []struct {
		ns   string
		addr netip.Prefix
	}{{p.NetnsA, cfg.AddrA}, {p.NetnsB, cfg.AddrB}} {
		f, err := OpenTUN(filepath.Join(netnsDir, side.ns), tunName)
		if err != nil {
			return nil, err
		}
		tuns = append(tuns, f)
		for _, args := range [][]string{
			{"link", "set", "lo", "up"},
			{"addr", "add", side.addr.String(), "dev", tunName},
			{"link", "set", tunName, "up"},
		} {
			if err := ip(ctx, append([]string{"-n", side.ns}, args...)...); err != nil {
				return nil, err
			}
		}
	}
	p.Link = Start(tuns[0], tuns[1], cfg.Delay, 0)
	return p, nil
}

// Close stops the link and deletes both namespaces. Processes still
// running in one keep it alive until they exit (ip-netns(8)).
func (p *Pair) Close() error {
	return errors.Join(p.Link.Close(), p.deleteNetns())
}

func (p *Pair) deleteNetns() error {
	var errs []error
	for _, ns := range []string{p.NetnsA, p.NetnsB} {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
			errs = append(errs, ip(context.Background(), "netns", "del", ns))
		}
	}
	return errors.Join(errs...)
}

// Path returns the file of namespace ns (NetnsA or NetnsB), for setns(2)
// and [InNetns].
func (p *Pair) Path(ns string) string { return filepath.Join(netnsDir, ns) }

// ip runs ip(8) with args and returns its error with its output.
func ip(ctx context.Context, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
