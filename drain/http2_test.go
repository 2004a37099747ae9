package drain_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/internal/testcert"
)

// TestDrainHTTP2 serves HTTP/2 over TLS on a tracked listener: a stream in
// flight when the drain begins completes, the connection is counted and is
// left to Shutdown's GOAWAY rather than cut by the (short) idle grace, and
// Drain returns nil once it is gone.
func TestDrainHTTP2(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	srv := &drain.Server{
		HTTP: &http.Server{TLSConfig: testcert.New(t).ServerConfig(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				time.Sleep(600 * time.Millisecond)
			}
			io.WriteString(w, r.Proto)
		})},
		IdleGrace: 20 * time.Millisecond,
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()
	url := "https://" + ln.Addr().String()
	resp, err := client.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "HTTP/2.0" {
		t.Fatalf("proto = %s, body %q; want HTTP/2.0", resp.Proto, body)
	}
	if got := srv.Tracker.Stats().OpenConnections; got != 1 {
		t.Fatalf("open connections = %d; want 1", got)
	}

	slow := make(chan error, 1)
	go func() {
		resp, err := client.Get(url + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Drain(ctx); err != nil {
		t.Fatalf("Drain = %v; want nil", err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("stream in flight during the drain: %v", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("Drain returned after %s, before the stream in flight ended", d)
	}
	if got := srv.Tracker.Stats().OpenConnections; got != 0 {
		t.Errorf("open connections after Drain = %d; want 0", got)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeTLS = %v; want nil after a drain", err)
	}
}

// TestDrainHTTP2StreamOpenedDuringGOAWAY opens a stream while the drain's
// first GOAWAY travels (the client reads nothing for a while after the
// drain begins), as a client on a real network does: the stream must be
// answered, over TLS and over h2c. With a one-phase GOAWAY, as Go's
// servers send, its frames are ignored and the client sees it refused.
// The first GOAWAY names stream 2^31-1 and comes with a PING; only after
// the client's ACK does the final GOAWAY name the last stream served.
func TestDrainHTTP2StreamOpenedDuringGOAWAY(t *testing.T) {
	for _, useTLS := range []bool{true, false} {
		name := map[bool]string{true: "tls", false: "h2c"}[useTLS]
		t.Run(name, func(t *testing.T) {
			srv, conn, c, served := rawH2Server(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s tls=%v", r.URL.Path, r.TLS != nil)
			}))
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			c.get(1, "/a")
			if body, _ := c.until(1); body != fmt.Sprintf("/a tls=%v", useTLS) {
				t.Fatalf("stream 1: body %q", body)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			drained := make(chan error, 1)
			go func() { drained <- srv.Drain(ctx) }()
			time.Sleep(300 * time.Millisecond) // the first GOAWAY is on its way, unread
			c.get(3, "/b")
			body, err := c.until(3)
			if err != nil {
				t.Fatalf("stream 3, opened while the first GOAWAY travelled: %v (GOAWAYs %v)", err, c.goAways)
			}
			if body != fmt.Sprintf("/b tls=%v", useTLS) {
				t.Errorf("stream 3: body %q", body)
			}
			if len(c.goAways) == 0 || c.goAways[0] != 1<<31-1 {
				t.Errorf("GOAWAYs name last streams %v; want 2147483647 first", c.goAways)
			}
			// The final GOAWAY, then the server closes the connection.
			c.until(0)
			if n := len(c.goAways); n != 2 || c.goAways[1] != 3 {
				t.Errorf("GOAWAYs name last streams %v; want [2147483647 3]", c.goAways)
			}
			if err := <-drained; err != nil {
				t.Errorf("Drain = %v; want nil", err)
			}
			if err := <-served; err != nil {
				t.Errorf("Serve = %v; want nil after a drain", err)
			}
		})
	}
}

// rawH2Server serves h on a drain.Server over TLS (HTTP/2 by ALPN) or h2c
// on a fresh loopback listener, and returns it with a frame-level client
// connected to it and the channel of Serve's result. Cleanup closes the
// connection.
func rawH2Server(t *testing.T, useTLS bool, h http.Handler) (*drain.Server, net.Conn, *rawH2, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	srv := &drain.Server{HTTP: hs, IdleGrace: 20 * time.Millisecond}
	served := make(chan error, 1)
	var conn net.Conn
	if useTLS {
		hs.TLSConfig = testcert.New(t).ServerConfig()
		go func() { served <- srv.ServeTLS(ln, "", "") }()
		conn, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	} else {
		hs.Protocols = new(http.Protocols)
		hs.Protocols.SetHTTP1(true)
		hs.Protocols.SetUnencryptedHTTP2(true)
		go func() { served <- srv.Serve(ln) }()
		conn, err = net.Dial("tcp", ln.Addr().String())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, conn, newRawH2(t, conn, ln.Addr().String(), useTLS), served
}

// rawH2 is an HTTP/2 client on the frame level (x/net's Framer), which
// answers SETTINGS and PING and records the GOAWAYs it gets.
type rawH2 struct {
	t         *testing.T
	fr        *http2.Framer
	authority string
	scheme    string
	goAways   []uint32 // last stream IDs, in order
	bodies    map[uint32]*bytes.Buffer
}

func newRawH2(t *testing.T, conn net.Conn, authority string, useTLS bool) *rawH2 {
	t.Helper()
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &rawH2{t: t, fr: http2.NewFramer(conn, conn), authority: authority, scheme: "http", bodies: map[uint32]*bytes.Buffer{}}
	if useTLS {
		c.scheme = "https"
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// get opens stream id with GET path.
func (c *rawH2) get(id uint32, path string) {
	c.t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", c.scheme}, {":authority", c.authority}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// until reads frames until stream id ends and returns its body; id 0
// reads until the connection ends.
func (c *rawH2) until(id uint32) (string, error) {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			if id == 0 {
				return "", nil
			}
			return "", err
		}
		c.handle(f)
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				return "", fmt.Errorf("GOAWAY %v", f.ErrCode)
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", fmt.Errorf("stream %d reset: %v", id, f.ErrCode)
			}
		case *http2.DataFrame:
			if f.StreamEnded() && f.StreamID == id {
				return c.bodies[id].String(), nil
			}
		case *http2.HeadersFrame:
			if f.StreamEnded() && f.StreamID == id {
				return "", nil
			}
		}
	}
}

// handle answers SETTINGS and PING, records GOAWAYs and keeps bodies.
func (c *rawH2) handle(f http2.Frame) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			c.fr.WriteSettingsAck()
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			c.fr.WritePing(true, f.Data)
		}
	case *http2.GoAwayFrame:
		c.goAways = append(c.goAways, f.LastStreamID)
	case *http2.DataFrame:
		b := c.bodies[f.StreamID]
		if b == nil {
			b = new(bytes.Buffer)
			c.bodies[f.StreamID] = b
		}
		b.Write(f.Data())
	}
}

// TestDrainHTTP2GoClientLargeBodies drains while Go's HTTP/2 client reads
// large responses, written in many frames, on one connection: the drain's
// GOAWAY and PING go in between the server's frames, and every body
// arrives whole, over TLS and over h2c.
func TestDrainHTTP2GoClientLargeBodies(t *testing.T) {
	const chunk, chunks, streams = 48 << 10, 12, 6
	for _, useTLS := range []bool{true, false} {
		name := map[bool]string{true: "tls", false: "h2c"}[useTLS]
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			started := make(chan struct{}, streams)
			hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				b := bytes.Repeat([]byte{'x'}, chunk)
				for range chunks {
					w.Write(b)
					w.(http.Flusher).Flush()
					time.Sleep(15 * time.Millisecond)
				}
			})}
			srv := &drain.Server{HTTP: hs, IdleGrace: 20 * time.Millisecond}
			served := make(chan error, 1)
			tr := &http.Transport{Protocols: new(http.Protocols)}
			defer tr.CloseIdleConnections()
			url := "https://" + ln.Addr().String()
			if useTLS {
				hs.TLSConfig = testcert.New(t).ServerConfig()
				tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
				tr.Protocols.SetHTTP2(true)
				go func() { served <- srv.ServeTLS(ln, "", "") }()
			} else {
				hs.Protocols = new(http.Protocols)
				hs.Protocols.SetHTTP1(true)
				hs.Protocols.SetUnencryptedHTTP2(true)
				tr.Protocols.SetUnencryptedHTTP2(true)
				url = "http://" + ln.Addr().String()
				go func() { served <- srv.Serve(ln) }()
			}
			client := &http.Client{Transport: tr}
			errs := make(chan error, streams)
			for range streams {
				go func() {
					resp, err := client.Get(url)
					if err != nil {
						errs <- err
						return
					}
					defer resp.Body.Close()
					n, err := io.Copy(io.Discard, resp.Body)
					if err == nil && (n != chunk*chunks || resp.ProtoMajor != 2) {
						err = fmt.Errorf("%s, %d bytes; want HTTP/2, %d", resp.Proto, n, chunk*chunks)
					}
					errs <- err
				}()
			}
			for range streams {
				<-started
			}
			time.Sleep(30 * time.Millisecond) // bodies are being written
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			if err := srv.Drain(ctx); err != nil {
				t.Errorf("Drain = %v; want nil", err)
			}
			for range streams {
				if err := <-errs; err != nil {
					t.Errorf("stream in flight during the drain: %v", err)
				}
			}
			if err := <-served; err != nil {
				t.Errorf("Serve = %v; want nil after a drain", err)
			}
		})
	}
}

// TestDrainHTTP2SilentClient: a client that answers no PING holds the
// drain up for GoAwayAckTimeout at most, not until its deadline.
func TestDrainHTTP2SilentClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	srv := &drain.Server{HTTP: hs, IdleGrace: 20 * time.Millisecond}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := newRawH2(t, conn, ln.Addr().String(), false)
	c.get(1, "/")
	if _, err := c.until(1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Drain(ctx); err != nil { // the client reads nothing meanwhile
		t.Errorf("Drain = %v; want nil", err)
	}
	if d := time.Since(start); d < drain.GoAwayAckTimeout || d > drain.GoAwayAckTimeout+3*time.Second {
		t.Errorf("Drain took %v; want about GoAwayAckTimeout (%v) and the server's close", d, drain.GoAwayAckTimeout)
	}
	c.until(0)
	if len(c.goAways) != 2 || c.goAways[0] != 1<<31-1 || c.goAways[1] != 1 {
		t.Errorf("GOAWAYs name last streams %v; want [2147483647 1]", c.goAways)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v; want nil after a drain", err)
	}
}

// TestHandOverHTTP2: keep-alives disabled (a generation on standby hands
// its clients over) makes an HTTP/2 client open a new connection for its
// next requests, over TLS and over h2c, with no request failed; HTTP/1
// clients had Connection: close, HTTP/2 ones kept their connection to the
// old generation, and a canary's judge saw none of their requests on the
// new one.
func TestHandOverHTTP2(t *testing.T) {
	for _, useTLS := range []bool{true, false} {
		t.Run(map[bool]string{true: "tls", false: "h2c"}[useTLS], func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			conns := 0
			hs := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) }),
				ConnState: func(_ net.Conn, st http.ConnState) {
					if st == http.StateNew {
						mu.Lock()
						conns++
						mu.Unlock()
					}
				},
			}
			tr := &http.Transport{}
			url := "http://" + ln.Addr().String() + "/"
			if useTLS {
				hs.TLSConfig = testcert.New(t).ServerConfig()
				tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
				tr.ForceAttemptHTTP2 = true
				url = "https://" + ln.Addr().String() + "/"
			} else {
				hs.Protocols = new(http.Protocols)
				hs.Protocols.SetHTTP1(true)
				hs.Protocols.SetUnencryptedHTTP2(true)
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			srv := &drain.Server{HTTP: hs}
			go func() {
				if useTLS {
					srv.ServeTLS(ln, "", "")
				} else {
					srv.Serve(ln)
				}
			}()
			defer ln.Close()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			defer tr.CloseIdleConnections()
			get := func() {
				t.Helper()
				resp, err := client.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(body) != "HTTP/2.0" {
					t.Fatalf("body %q; want HTTP/2.0", body)
				}
			}
			opened := func() int { mu.Lock(); defer mu.Unlock(); return conns }
			for range 5 {
				get()
			}
			if n := opened(); n != 1 {
				t.Fatalf("%d connections for 5 requests; want 1", n)
			}
			srv.Tracker.SetKeepAlivesEnabled(false)
			for deadline := time.Now().Add(3 * time.Second); opened() < 2; {
				if time.Now().After(deadline) {
					t.Fatalf("still %d connection 3s after keep-alives were disabled; want the client to open a new one", opened())
				}
				get()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// untilGoAways reads frames, answering SETTINGS and PING, until n GOAWAYs
// have come or the connection fails (its deadline).
func (c *rawH2) untilGoAways(n int) error {
	for len(c.goAways) < n {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return err
		}
		c.handle(f)
	}
	return nil
}

// TestDrainHTTP2FinalGoAwayWhileAStreamRuns: the final GOAWAY comes once
// the client has acked the first one's PING, while a long stream still
// runs, not when it ends: until then the client may open new streams on
// the old connection, and one that keeps doing so would hold the drain
// to its deadline (RFC 9113, section 6.8; a new user's trial saw no final
// GOAWAY before the stream's end). The drain then ends with the stream.
func TestDrainHTTP2FinalGoAwayWhileAStreamRuns(t *testing.T) {
	for _, useTLS := range []bool{true, false} {
		name := map[bool]string{true: "tls", false: "h2c"}[useTLS]
		t.Run(name, func(t *testing.T) {
			started, release := make(chan struct{}, 1), make(chan struct{})
			srv, conn, c, served := rawH2Server(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				select {
				case <-release:
				case <-time.After(safety):
				}
				fmt.Fprintf(w, "%s done", r.URL.Path)
			}))
			c.get(1, "/long")
			<-started
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			drained := make(chan error, 1)
			go func() { drained <- srv.Drain(ctx) }()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			if err := c.untilGoAways(2); err != nil {
				close(release)
				t.Fatalf("GOAWAYs %v while stream 1 runs, then %v; want the final one before the stream ends", c.goAways, err)
			}
			if c.goAways[0] != 1<<31-1 || c.goAways[1] != 1 {
				t.Errorf("GOAWAYs name last streams %v; want [2147483647 1]", c.goAways)
			}
			close(release)
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			body, err := c.until(1)
			if err != nil || body != "/long done" {
				t.Errorf("stream 1: %q, %v; want its body", body, err)
			}
			// As Go's client does with a connection that got a GOAWAY
			// and has no stream left (else the server waits a second).
			conn.Close()
			at := time.Now()
			if err := <-drained; err != nil {
				t.Errorf("Drain = %v; want nil", err)
			}
			if d := time.Since(at); d > 200*time.Millisecond {
				t.Errorf("Drain returned %s after the client closed; want at once (not at Shutdown's next look, up to 500 ms later)", d)
			}
			if err := <-served; err != nil {
				t.Errorf("Serve = %v; want nil after a drain", err)
			}
		})
	}
}
