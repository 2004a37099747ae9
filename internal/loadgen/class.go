package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Class is the outcome of one request.
type Class uint8

// The outcomes. Every class but OK is a failure.
const (
	OK      Class = iota // a full 2xx response
	Refused              // ECONNREFUSED while dialing
	Reset                // ECONNRESET, EPIPE or ECONNABORTED while writing or reading
	EOF                  // the connection ended before a full response
	Timeout              // the request's deadline passed
	Non2xx               // a full response whose status is not 2xx
	Other                // anything else (malformed response, EADDRNOTAVAIL, ...)
)

// NumClasses is the number of classes; arrays indexed by Class have this
// length.
const NumClasses = 7

// String returns the lower-case name used in tables: "ok", "refused",
// "reset", "eof", "timeout", "non2xx" or "other".
func (c Class) String() string {
	switch c {
	case OK:
		return "ok"
	case Refused:
		return "refused"
	case Reset:
		return "reset"
	case EOF:
		return "eof"
	case Timeout:
		return "timeout"
	case Non2xx:
		return "non2xx"
	case Other:
		return "other"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Failed reports whether c is a failure (anything but OK).
func (c Class) Failed() bool { return c != OK }

// Classify maps an error from dialing, writing a request or reading its
// response to a failure class. It never returns OK; a nil error is Other.
func Classify(err error) Class {
	switch {
	case err == nil:
		return Other
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED):
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return Timeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return Timeout
	}
	return Other
}
