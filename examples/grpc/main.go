// Command echo is a gRPC service run by the launcher: it serves on the
// listeners the launcher binds (SO_REUSEPORT, granted by the supervisor),
// reports ready, and when the next generation serves, drains with
// grpc.Server.GracefulStop (grpc-go sends GOAWAY twice, so that no call
// races the close), cut with Stop at the supervisor's --drain-timeout and
// reported. Interceptors count every call in the launcher's per-generation
// metrics (launcher_inflight_requests, launcher_requests_total), and a
// drain.Listener its connections (launcher_open_connections).
//
//	mkdir -p releases/v1 releases/v2
//	go build -o releases/v1/echo . && cp releases/v1/echo releases/v2/
//	launcher start --listen 127.0.0.1:9090 --releases releases -- releases/v1/echo
//	launcher upgrade v2
//	releases/v1/echo -say hello   # a client: one Say call to -addr
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/launcherd/launcher/drain"
	"github.com/launcherd/launcher/launcher"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address when no supervisor runs the service (with -say: the server's)")
	say := flag.String("say", "", "be a client: call Say with this text on -addr, print the answer and exit")
	flag.Parse()
	if *say != "" {
		if err := callSay(context.Background(), *addr, *say); err != nil {
			fmt.Fprintln(os.Stderr, "echo:", err)
			os.Exit(1)
		}
		return
	}
	app, err := launcher.New(launcher.Options{Addr: *addr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
	if err := run(context.Background(), app); err != nil {
		app.Logger().Error("echo", "err", err)
		os.Exit(1)
	}
}

// run serves until the process must stop, then drains and reports.
func run(ctx context.Context, app *launcher.App) error {
	defer app.Close()
	lns, err := app.Listen(ctx)
	if err != nil {
		return err
	}
	calls := &interceptors{app: app}
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(calls.unary),
		grpc.ChainStreamInterceptor(calls.stream),
	)
	srv.RegisterService(&EchoDesc, echo{generation: app.Generation()})

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	for _, ln := range lns {
		go func() { // owned by run: ends when the launcher closes ln, or Stop
			// The launcher closes ln once its accept queue is empty: that
			// ends Serve with net.ErrClosed, which is the drain, not a failure.
			// drain.NewListener counts the connections, in
			// launcher_open_connections and launcher status.
			if err := srv.Serve(drain.NewListener(ln, app.Tracker())); err != nil && !errors.Is(err, net.ErrClosed) {
				cancel(fmt.Errorf("serve %s: %w", ln.Addr(), err)) // Wait then stops the App
			}
		}()
	}
	if err := app.Ready(); err != nil {
		return err
	}
	app.Wait(ctx) // until the supervisor releases the listeners, or SIGTERM

	dctx, stop := app.DrainContext(context.Background())
	defer stop()
	st := calls.inflight.Load()
	app.Logger().Info("draining", "calls", st)
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }() // ends when the calls do, or Stop below
	var cut int64
	select {
	case <-stopped:
	case <-dctx.Done():
		cut = calls.inflight.Load() // the calls and streams Stop ends
		srv.Stop()
		<-stopped
	}
	app.Drained(cut)
	return context.Cause(ctx)
}

// interceptors count calls in the launcher's per-generation metrics; a
// stream counts as one call from its start to its end.
type interceptors struct {
	app      *launcher.App
	inflight atomic.Int64 // what a drain cut at its deadline would cut
}

func (i *interceptors) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	r := i.app.Begin()
	i.inflight.Add(1)
	resp, err := h(ctx, req)
	i.inflight.Add(-1)
	r.End(httpStatus(status.Code(err)))
	return resp, err
}

func (i *interceptors) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	r := i.app.Begin()
	i.inflight.Add(1)
	err := h(srv, ss)
	i.inflight.Add(-1)
	r.End(httpStatus(status.Code(err)))
	return err
}

// httpStatus maps a gRPC status code onto the HTTP status code that
// launcher_requests_total counts, as grpc-gateway does (and as the
// mapping in gRPC's doc/http-grpc-status-mapping.md, read backwards).
func httpStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499 // client closed request
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	default: // Unknown, Internal, DataLoss
		return http.StatusInternalServerError
	}
}

// callSay makes one Say call to addr (plaintext, no retry) and prints the
// answer, which names the generation that served it.
func callSay(ctx context.Context, addr, text string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDisableRetry())
	if err != nil {
		return fmt.Errorf("say to %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, MethodSay, wrapperspb.String(text), out); err != nil {
		return fmt.Errorf("say to %s: %w", addr, err)
	}
	fmt.Println(out.GetValue())
	return nil
}
