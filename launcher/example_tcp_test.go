package launcher_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/launcherd/launcher/launcher"
)

// A plain TCP server (here one line echoed per connection) drains with the
// App's deadline and reports what it cut: Listen binds (under a
// supervisor, once it grants), Ready reports, Wait returns once the
// listeners are released without losing a queued connection, DrainContext
// ends at the supervisor's --drain-timeout, and Drained reports the count
// cut to the supervisor (launcher_drain_cut_requests_total). Begin and End
// feed the launcher's request metrics.
func ExampleApp_Drained() {
	app, err := launcher.New(launcher.Options{
		Addr:   "127.0.0.1:0", // alone; under the supervisor its --listen wins
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	lns, err := app.Listen(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	srv := &echoServer{app: app, conns: map[net.Conn]struct{}{}}
	for _, ln := range lns {
		srv.wg.Add(1)
		go srv.serve(ln) // ends when the App releases ln
	}
	if err := app.Ready(); err != nil {
		log.Fatal(err)
	}

	c, err := net.Dial("tcp", lns[0].Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(c, "hello")
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)
	c.Close()
	app.Stop() // for the example: a real server waits for SIGTERM or the supervisor

	app.Wait(context.Background()) // signals; returns once Stopping is closed
	ctx, cancel := app.DrainContext(context.Background())
	defer cancel()
	cut := srv.drain(ctx)
	app.Drained(cut)
	fmt.Println("cut:", cut)
	// Output:
	// hello
	// cut: 0
}

// echoServer echoes one line per connection.
type echoServer struct {
	app   *launcher.App
	wg    sync.WaitGroup // accept loops and connections
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (s *echoServer) serve(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // released by the App: the drain has begun
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.handle(c) // ends when the line is echoed, or the drain cuts c
	}
}

func (s *echoServer) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	req := s.app.Begin()
	_, err = c.Write([]byte(line))
	code := 200
	if err != nil {
		code = 499
	}
	req.End(code)
}

// drain waits for the connections to finish until ctx ends, then closes
// those left and returns how many.
func (s *echoServer) drain(ctx context.Context) int64 {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }() // ends once the cut below closes every connection
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	s.mu.Lock()
	cut := int64(len(s.conns))
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	return cut
}
