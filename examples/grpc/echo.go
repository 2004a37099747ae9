package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The Echo service is described by hand rather than generated from a
// .proto, so that the example needs no protoc: its messages are protobuf's
// well-known wrappers, which grpc's default codec encodes. Its proto would
// read:
//
//	service Echo {
//	  rpc Say(google.protobuf.StringValue) returns (google.protobuf.StringValue);
//	  rpc Count(google.protobuf.UInt32Value) returns (stream google.protobuf.StringValue);
//	}
const serviceName = "launcher.examples.Echo"

// Full method names, as on the wire.
const (
	MethodSay   = "/" + serviceName + "/Say"
	MethodCount = "/" + serviceName + "/Count"
)

// CountInterval is the time between two messages of Count's stream.
const CountInterval = 100 * time.Millisecond

// EchoServer is the Echo service.
type EchoServer interface {
	// Say answers "generation G: TEXT".
	Say(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
	// Count streams N messages "generation G: I", one every
	// CountInterval.
	Count(*wrapperspb.UInt32Value, grpc.ServerStream) error
}

// EchoDesc registers an EchoServer with grpc.Server.RegisterService.
var EchoDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*EchoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Say", Handler: sayHandler}},
	Streams:     []grpc.StreamDesc{{StreamName: "Count", Handler: countHandler, ServerStreams: true}},
	Metadata:    "echo.go",
}

func sayHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(EchoServer).Say(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: MethodSay}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(EchoServer).Say(ctx, req.(*wrapperspb.StringValue))
	})
}

func countHandler(srv any, stream grpc.ServerStream) error {
	in := new(wrapperspb.UInt32Value)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	return srv.(EchoServer).Count(in, stream)
}

// echo is the EchoServer of one generation.
type echo struct{ generation int }

func (e echo) Say(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(fmt.Sprintf("generation %d: %s", e.generation, in.GetValue())), nil
}

func (e echo) Count(in *wrapperspb.UInt32Value, stream grpc.ServerStream) error {
	t := time.NewTicker(CountInterval)
	defer t.Stop()
	for i := range in.GetValue() {
		if err := stream.SendMsg(wrapperspb.String(fmt.Sprintf("generation %d: %d", e.generation, i))); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-t.C:
		}
	}
	return nil
}
