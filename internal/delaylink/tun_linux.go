package delaylink

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs f on an OS thread switched into the network namespace at
// nsPath (such as /run/netns/NAME), then switches that thread back.
// Sockets and devices that f creates belong to that namespace for good;
// goroutines that f starts do not run in it.
//
// The calling goroutine's thread is left alone: f runs on a new goroutine
// locked to its thread (a namespace is per thread, and Go moves
// goroutines between threads unless locked).
func InNetns(nsPath string, f func() error) error {
	target, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() { // ends when f returns
		runtime.LockOSThread()
		// Without UnlockOSThread the thread exits with this goroutine:
		// when switching back fails, no other goroutine runs on it.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back from %s: %w", nsPath, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// OpenTUN creates the TUN device name (IFF_TUN without packet information:
// each read and write is one IP packet) in the network namespace at
// nsPath, and returns its file, non-blocking under Go's poller so that
// Close ends a pending Read. The device goes when the file is closed.
// Creating one needs CAP_NET_ADMIN.
func OpenTUN(nsPath, name string) (*os.File, error) {
	var f *os.File
	err := InNetns(nsPath, func() error {
		// The device is created in the namespace of the thread that
		// opens /dev/net/tun (drivers/net/tun.c, tun_chr_open).
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("tun %q: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("tun %q: TUNSETIFF: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "tun:"+name)
		return nil
	})
	return f, err
}
