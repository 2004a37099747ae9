// Package supervisor is the long-lived launcher process: it runs
// generations of a service as worker processes and upgrades them with
// SO_REUSEPORT, without passing file descriptors and without losing a
// connection.
//
// An upgrade starts generation G+1, grants its workers the right to
// listen one at a time (so the supervisor knows each socket's index in the
// kernel's reuseport group), waits until all report ready and pass their
// health check, then steers new connections to G+1 with a classic BPF
// program, asks each worker of G in turn to empty its accept queue and
// close its listeners, re-steering after each close (the kernel renumbers
// the group), and lets G drain. If G+1 fails before it is ready, it is
// killed and G serves on untouched.
//
// The supervisor's own PID never changes; it writes it to the state
// directory, serves the CLI (package cmd/launcher) on a control socket
// there, and exports metrics for all generations.
package supervisor
