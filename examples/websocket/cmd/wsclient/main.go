// Command wsclient echoes numbered messages through the websocket example
// and follows it across upgrades: on close 1001 "going away" it reconnects
// to the same address, now served by the new generation, and resends what
// the old one had not echoed. It prints each connection as it ends and,
// on SIGINT or after -for, a summary; it exits 1 if a message was lost.
//
//	go run ./cmd/wsclient -url ws://127.0.0.1:8080/echo
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/launcherd/launcher/examples/websocket/echo"
)

func main() {
	url := flag.String("url", "ws://127.0.0.1:8080/echo", "the service's WebSocket URL")
	every := flag.Duration("every", 10*time.Millisecond, "interval between messages")
	dur := flag.Duration("for", 0, "stop after this long (0: on SIGINT or SIGTERM)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	c := &echo.Client{URL: *url, Name: "wsclient", Interval: *every}
	rep, err := c.Run(ctx)
	for i, s := range rep.Sessions {
		how := fmt.Sprintf("closed %d", s.Close)
		switch {
		case s.ByClient:
			how = "closed by the client"
		case s.Close < 0:
			how = fmt.Sprintf("ended without a close frame: %v", s.Err)
		}
		fmt.Printf("connection %d: generation %d (%s, pid %d): %d echoed, %d resent; %s\n",
			i+1, s.Generation, s.Version, s.PID, s.Echoed, s.Resent, how)
	}
	fmt.Printf("%d sent, %d echoed, %d lost, %d duplicate(s), %d mismatched, %d failed dial(s)\n",
		rep.Sent, rep.Answered, len(rep.Lost), rep.Duplicates, rep.Mismatched, rep.DialErrors)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsclient:", err)
		os.Exit(1)
	}
}
