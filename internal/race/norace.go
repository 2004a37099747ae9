//go:build !race

// Package race says whether the race detector is built in, as the
// standard library's internal/race does: tests that count allocations
// skip under -race, where sync.Pool drops items on purpose.
package race

// Enabled reports whether the binary was built with -race.
const Enabled = false
