package delaylink

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
)

// needPair skips the test unless it can make namespaces and TUN devices,
// and fails it instead in CI, where they must work.
func needPair(t *testing.T) {
	t.Helper()
	_, ipErr := exec.LookPath("ip")
	_, tunErr := os.Stat("/dev/net/tun")
	if os.Getuid() == 0 && ipErr == nil && tunErr == nil {
		return
	}
	msg := fmt.Sprintf("needs root, ip(8) and /dev/net/tun to make network namespaces and TUN devices (uid %d, ip: %v, tun: %v)", os.Getuid(), ipErr, tunErr)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestPairDelaysTCP checks the whole setup against the kernel: a TCP
// handshake from B to A takes one round trip, an echo another.
func TestPairDelaysTCP(t *testing.T) {
	needPair(t)
	const delay = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := NewPair(ctx, PairConfig{
		Name:  fmt.Sprintf("ldl-%d", os.Getpid()),
		AddrA: netip.MustParsePrefix("10.77.0.1/24"),
		AddrB: netip.MustParsePrefix("10.77.0.2/24"),
		Delay: delay,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(p.Path(p.NetnsA)); err == nil {
			t.Errorf("namespace %s still there after Close", p.NetnsA)
		}
	}()

	var ln net.Listener
	if err := InNetns(p.Path(p.NetnsA), func() (err error) {
		ln, err = net.Listen("tcp", "10.77.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // an echo server; ends when ln closes
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // ends when the client closes
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte(line))
			}()
		}
	}()

	var (
		c             net.Conn
		dialed, echod time.Duration
	)
	start := time.Now()
	if err := InNetns(p.Path(p.NetnsB), func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dialed = time.Since(start)
	start = time.Now()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
	echod = time.Since(start)
	rtt := 2 * delay
	t.Logf("handshake %v, echo %v over a %v one-way link", dialed, echod, delay)
	for what, got := range map[string]time.Duration{"handshake": dialed, "echo": echod} {
		if got < rtt || got > rtt+100*time.Millisecond {
			t.Errorf("%s took %v; want one round trip, about %v", what, got, rtt)
		}
	}
	if _, drop := p.Link.Stats(); drop != 0 {
		t.Errorf("link dropped %d packets", drop)
	}
}

// TestPairAddressesStayInside checks that the link's addresses exist only
// in the pair's namespaces, not in the test's own.
func TestPairAddressesStayInside(t *testing.T) {
	needPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := NewPair(ctx, PairConfig{
		Name:  fmt.Sprintf("ldl-%d", os.Getpid()),
		AddrA: netip.MustParsePrefix("10.77.0.1/24"),
		AddrB: netip.MustParsePrefix("10.77.0.2/24"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil && netip.MustParsePrefix("10.77.0.0/24").Contains(pfx.Addr()) {
			t.Errorf("address %v in the test's own namespace", a)
		}
	}
}
