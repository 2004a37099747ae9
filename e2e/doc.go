// Package e2e holds the end-to-end tests of the launcher: real supervisor
// and worker processes built from this module, real sockets on 127.0.0.1,
// real signals. It has no non-test code.
package e2e
