package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// IdlePool is a set of idle keep-alive connections, each opened with one
// answered request, that later send one more request each: the clients of
// a busy service whose connections sit idle between requests, which is
// what a drain must close without racing a request on them.
//
// Before its second request a connection is checked the way an HTTP
// client checks an idle connection before reusing it: if the server has
// closed it, the request is not sent (a client would dial again; that is
// not a failure). A request sent on an open connection must be answered.
type IdlePool struct {
	addr  string
	conns []*idleConn
}

type idleConn struct {
	c  net.Conn
	br *bufio.Reader
}

// Result of [IdlePool.SendSpread].
type IdleResult struct {
	Answered int           // full 2xx responses
	NotSent  int           // the server had closed the connection before the send
	Failed   []IdleFailure // sent on an open connection and not answered
}

// RaceBound is the number of failures of a SendSpread over n connections
// that the keep-alive race explains: one in 1,000. A request the client
// writes while the server's FIN is on its way (after the server's last
// look at the socket, before the client's own look sees the FIN) cannot
// be answered by any server (RFC 9112, section 9.3.1, leaves it to the
// client to retry). Both looks are two system calls back to back, but
// either thread can be preempted between them, on a loaded 2-core machine
// for milliseconds: CI saw 1 in 5,000. The server's side of it (its
// look at the receive queue and at the bytes counted) is tested one state
// at a time in package drain; a test under load can only bound the rest.
func RaceBound(n int) int { return n / 1000 }

// Unexplained returns the failures that the keep-alive race cannot
// explain: any beyond RaceBound(n), and any that received part of a
// response or timed out rather than meeting the connection's end (EOF or
// a reset) with nothing read.
func (r IdleResult) Unexplained(n int) []IdleFailure {
	var out []IdleFailure
	raced := 0
	for _, f := range r.Failed {
		if f.Empty && (f.Class == EOF || f.Class == Reset) && raced < RaceBound(n) {
			raced++
			continue
		}
		out = append(out, f)
	}
	return out
}

// IdleFailure is one request of [IdlePool.SendSpread] that was sent and not
// answered.
type IdleFailure struct {
	Sent  time.Time // when the request was written
	Class Class
	Err   error
	Empty bool // not a byte of a response arrived
}

// OpenIdle dials n connections to addr, dialers at a time, and sends one
// GET / on each; every answer must be a keep-alive 2xx. On error the
// connections opened so far are closed.
func OpenIdle(ctx context.Context, addr string, n, dialers int) (*IdlePool, error) {
	p := &IdlePool{addr: addr, conns: make([]*idleConn, n)}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for range max(dialers, 1) {
		wg.Add(1)
		go func() { // ends when next is closed
			defer wg.Done()
			for i := range next {
				ic, err := p.open(ctx)
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("connection %d: %w", i, err)
				}
				p.conns[i] = ic
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		p.Close()
		return nil, first
	}
	return p, nil
}

func (p *IdlePool) open(ctx context.Context) (*idleConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	ic := &idleConn{c: c, br: bufio.NewReaderSize(c, 1024)}
	resp, err := ic.get(p.addr, time.Now().Add(DefaultTimeout))
	if err == nil && resp.Close {
		err = errors.New("first answer closes the connection")
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return ic, nil
}

// get sends GET / and reads the whole answer, which must be a 2xx.
func (ic *idleConn) get(host string, deadline time.Time) (*http.Response, error) {
	ic.c.SetDeadline(deadline)
	if _, err := ic.c.Write(getRequest(host)); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	resp, _, err := readAnswer(ic.br)
	return resp, err
}

func getRequest(host string) []byte {
	return []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: launcher-loadgen\r\n\r\n")
}

// readAnswer reads a response and its body, which it returns; a non-2xx
// response is an error.
func readAnswer(br *bufio.Reader) (*http.Response, []byte, error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("read response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp, body, fmt.Errorf("status %s", resp.Status)
	}
	return resp, body, nil
}

// Close closes every connection.
func (p *IdlePool) Close() {
	for _, ic := range p.conns {
		if ic != nil {
			ic.c.Close()
		}
	}
}

// SendSpread sends one GET / on every connection, in a random order, at
// times spread evenly over [from, from+spread), each from a pool of
// workers goroutines (not one per connection: the race detector allows
// 8128 at once), and waits for every answer. A connection the server has
// closed is not sent on; every other request's outcome is counted.
func (p *IdlePool) SendSpread(ctx context.Context, from time.Time, spread time.Duration, workers int) IdleResult {
	order := rand.Perm(len(p.conns))
	type job struct {
		ic *idleConn
		at time.Time
	}
	jobs := make(chan job)
	var (
		mu  sync.Mutex
		res IdleResult
		wg  sync.WaitGroup
	)
	for range max(workers, 1) {
		wg.Add(1)
		go func() { // ends when jobs is closed
			defer wg.Done()
			for j := range jobs {
				sent, empty, err := j.ic.send(p.addr)
				mu.Lock()
				switch {
				case sent.IsZero():
					res.NotSent++
				case err != nil:
					res.Failed = append(res.Failed, IdleFailure{Sent: sent, Class: Classify(err), Err: err, Empty: empty})
				default:
					res.Answered++
				}
				mu.Unlock()
			}
		}()
	}
	for k, i := range order {
		at := from.Add(spread * time.Duration(k) / time.Duration(len(order)))
		select {
		case <-time.After(time.Until(at)):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		jobs <- job{p.conns[i], at}
	}
	close(jobs)
	wg.Wait()
	slices.SortFunc(res.Failed, func(a, b IdleFailure) int { return a.Sent.Compare(b.Sent) })
	return res
}

// send sends GET / unless the server has closed the connection, and
// reads the answer. sent is zero when nothing was sent; empty reports
// that not a byte of an answer arrived.
func (ic *idleConn) send(host string) (sent time.Time, empty bool, err error) {
	req := getRequest(host)
	ic.c.SetDeadline(time.Now().Add(DefaultTimeout))
	sent = time.Now()
	ok, err := writeIfOpen(ic.c, req)
	switch {
	case !ok:
		return time.Time{}, false, nil
	case err != nil:
		return sent, true, fmt.Errorf("write request: %w", err)
	}
	if _, err := ic.br.Peek(1); err != nil {
		return sent, true, fmt.Errorf("read response: %w", err)
	}
	_, _, err = readAnswer(ic.br)
	return sent, false, err
}

// SlowRequest sends GET path on c one line at a time, waiting every
// between lines: the request line, headers header lines (Host and
// X-Slow-N), the empty line. Then it reads the answer and its body through
// br. It is a client on a slow link, or one that trickles its header on
// purpose.
func SlowRequest(c net.Conn, br *bufio.Reader, host, path string, headers int, every time.Duration) (*http.Response, []byte, error) {
	lines := []string{"GET " + path + " HTTP/1.1\r\n", "Host: " + host + "\r\n"}
	for i := 1; i < headers; i++ {
		lines = append(lines, fmt.Sprintf("X-Slow-%d: %d\r\n", i, i))
	}
	lines = append(lines, "\r\n")
	c.SetDeadline(time.Now().Add(every*time.Duration(len(lines)) + DefaultTimeout))
	for i, l := range lines {
		if i > 0 {
			time.Sleep(every)
		}
		if _, err := io.WriteString(c, l); err != nil {
			return nil, nil, fmt.Errorf("write header line %d: %w", i, err)
		}
	}
	return readAnswer(br)
}
