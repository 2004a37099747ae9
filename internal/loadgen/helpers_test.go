package loadgen

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// helloServer is the service under test in miniature: "/" and "/sleep?d="
// answer "hello from VERSION\n", VERSION cycling through versions. A POST
// must carry the body "hello". With closeEvery > 0, every closeEvery-th
// response carries "Connection: close".
type helloServer struct {
	*httptest.Server
	conns atomic.Int64 // connections accepted
	reqs  atomic.Int64 // requests answered
}

func newHelloServer(t *testing.T, closeEvery int64, versions ...string) *helloServer {
	t.Helper()
	s := &helloServer{}
	handler := func(w http.ResponseWriter, r *http.Request) {
		n := s.reqs.Add(1)
		if r.Method == "POST" {
			if b, err := io.ReadAll(r.Body); err != nil || string(b) != postBody {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
		}
		if r.URL.Path == "/sleep" {
			d, err := time.ParseDuration(r.FormValue("d"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if closeEvery > 0 && n%closeEvery == 0 {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "hello from "+versions[int(n)%len(versions)]+"\n")
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(handler))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// addr returns the server's host:port.
func (s *helloServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }

// rawServer accepts connections on 127.0.0.1 and hands each to handle in
// its own goroutine. At cleanup it closes the listener and every
// connection, and waits for the goroutines.
type rawServer struct {
	ln     net.Listener
	conns  atomic.Int64
	mu     sync.Mutex
	open   []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func newRawServer(t *testing.T, handle func(c *net.TCPConn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				continue
			}
			s.open = append(s.open, c)
			s.mu.Unlock()
			s.wg.Go(func() { handle(c.(*net.TCPConn), bufio.NewReader(c)) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		s.closed = true
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

// readRequest reads one request head (and its body) from br.
func readRequest(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return err
}

// closedAddr returns a 127.0.0.1 address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
