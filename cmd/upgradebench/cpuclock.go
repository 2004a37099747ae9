package main

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// procCPUClock returns the CPU time process pid has used so far, in
// nanoseconds: the sum of all its threads' time on a CPU, user and kernel
// (the scheduler's sum_exec_runtime), including threads that have exited,
// read from the process's CPU-time clock as clock_getcpuclockid(3) makes
// it (Linux: clock id ^pid<<3 | CPUCLOCK_SCHED, see the kernel's
// include/linux/posix-timers.h). /proc/PID/stat gives the same time only
// in 10 ms ticks, and /proc/PID/schedstat only the main thread's;
// summing /proc/PID/task/*/schedstat would lose the threads that exit
// between two reads.
func procCPUClock(pid int) (time.Duration, error) {
	const cpuclockSched = 2
	var ts unix.Timespec
	if err := unix.ClockGettime(int32(^pid<<3|cpuclockSched), &ts); err != nil {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}
