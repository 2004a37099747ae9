// Package supervisor is the long-lived launcher process: it runs
// generations of a service as worker processes and upgrades them with
// SO_REUSEPORT, without passing file descriptors and without losing a
// connection.
//
// An upgrade starts generation G+1, grants its workers the right to
// listen one at a time (so the supervisor knows each socket's slot in the
// kernel's reuseport group), waits until all report ready and pass their
// health check, writes the state file, then steers new connections to G+1
// with a classic BPF program. G stands by for the probation (listening,
// steered away from, handing its keep-alive clients over): a crash of
// G+1 in that time points the program back at G at once. Then G's workers
// wait for their accept queues to stay empty (all at once), close their
// listeners one at a time with the program re-pointed around each close
// (the kernel moves the group's last socket into the freed slot), and
// drain. If G+1 fails before it is ready, it is killed and G serves on
// untouched.
//
// # Shape
//
// One goroutine, the loop, owns all of this state: generations, workers,
// the group model, steering, probation, restarts and the operation under
// way. Everything else is an actor that posts a typed event to it: a
// worker's control connection (its reader posts what the worker says, its
// writer sends what the loop queues), a process watcher (its exit), a
// timer (a probation's end, a restart's back-off, a deadline), an I/O
// helper (a health check, an in-flight count) and each CLI command, which
// gets its steps and its result on channels of its own. Requests to
// workers carry IDs and their replies come back as events. The loop never
// waits on I/O and holds no lock; what it does to the operating system
// (start a process, signal it, write the state file, repoint --current,
// sd_notify) goes through a small effects interface, which the tests
// replace with fake processes that speak the worker's protocol.
// [Supervisor.Run] returns only once every actor has returned.
//
// # Process trees
//
// A worker is a tree of processes: a release that is a shell script runs
// the app or a helper as a child, an app runs commands. Every kill (a
// ready timeout, a failed health check, a drain timeout, an aborted
// upgrade, a stop's deadline) ends the whole tree, and a worker's exit
// kills what it left, so nothing of a generation outlives it. Where the
// supervisor may create cgroups in its own (root, or systemd's
// Delegate=yes), each worker starts in a cgroup v2 of its own, under one
// per generation, and cgroup.kill ends it; the generations' cgroups also
// give their CPU time and memory to the metrics. Elsewhere a worker's tree
// is its process group. The effects hold these mechanics; the loop only
// says kill, and when a generation is over.
//
// # Adoption
//
// The state file (state.json in the state directory) records the live
// workers, the active generation and the group's order. A supervisor
// started on the directory of a killed one verifies each recorded pid
// through a pidfd and the token in its environment, waits for the workers
// to dial the control socket again, and carries on with them.
//
// # Metrics
//
// The supervisor's own PID never changes; it writes it to the state
// directory, serves the CLI (package cmd/launcher, through [Client]) on a
// control socket there, and exports metrics for all generations: at each
// scrape of [Config.MetricsAddr] it gathers every live worker's series
// from its admin socket. A worker that has drained reports it and waits
// (at most 2 s) while the loop reads its metrics one last time; those
// final values are served, frozen, for [Config.KeepExited] after the
// worker has exited, so that no scrape misses its last requests.
package supervisor
