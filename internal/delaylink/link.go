package delaylink

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQueue is how many packets each direction of a [Link] holds at
// most (the bandwidth-delay product of the link, in packets).
const DefaultQueue = 4096

// maxPacket bounds one packet read from an endpoint: a TUN device without
// offloads never hands over more than its MTU, at most 64 KiB.
const maxPacket = 64 << 10

// Link copies packets between two endpoints, each held for a fixed delay.
// An endpoint's Read returns one whole packet and its Write takes one (a
// TUN device's file does).
type Link struct {
	delay     time.Duration
	a, b      io.ReadWriteCloser
	done      chan struct{} // closed by Close: held packets are dropped
	closeOnce sync.Once
	wg        sync.WaitGroup

	forwarded, dropped atomic.Uint64
}

// packet is one packet in a direction's queue.
type packet struct {
	due  time.Time
	data []byte
}

// Start copies packets from a to b and from b to a, each delivered delay
// after it was read, until Close. queue bounds the packets in flight per
// direction; 0 means DefaultQueue.
func Start(a, b io.ReadWriteCloser, delay time.Duration, queue int) *Link {
	if queue <= 0 {
		queue = DefaultQueue
	}
	l := &Link{delay: delay, a: a, b: b, done: make(chan struct{})}
	for _, d := range [][2]io.ReadWriteCloser{{a, b}, {b, a}} {
		q := make(chan packet, queue)
		l.wg.Add(2)
		go l.read(d[0], q)  // ends when d[0] is closed; then closes q
		go l.write(d[1], q) // ends when q is closed and empty
	}
	return l
}

// read reads packets from src into q, stamped with their delivery time.
func (l *Link) read(src io.Reader, q chan<- packet) {
	defer l.wg.Done()
	defer close(q)
	buf := make([]byte, maxPacket)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p := packet{due: time.Now().Add(l.delay), data: append([]byte(nil), buf[:n]...)}
		select {
		case q <- p:
		default:
			l.dropped.Add(1)
		}
	}
}

// write delivers q's packets to dst at their due time. The delay is the
// same for all, so the queue's order is the delivery order.
func (l *Link) write(dst io.Writer, q <-chan packet) {
	defer l.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for p := range q {
		if d := time.Until(p.due); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-l.done:
				for range q { // until the reader has stopped
				}
				return
			}
		}
		if _, err := dst.Write(p.data); err != nil {
			// A packet the endpoint refuses is lost, as on a real link.
			l.dropped.Add(1)
			continue
		}
		l.forwarded.Add(1)
	}
}

// Stats returns how many packets were delivered and how many were dropped
// (a full queue, or a write the endpoint refused).
func (l *Link) Stats() (forwarded, dropped uint64) {
	return l.forwarded.Load(), l.dropped.Load()
}

// Close closes both endpoints and waits for the copiers to end; packets
// still held are dropped.
func (l *Link) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = errors.Join(l.a.Close(), l.b.Close())
	})
	l.wg.Wait()
	return err
}
