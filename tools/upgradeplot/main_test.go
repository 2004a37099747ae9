package main

import (
	"errors"
	"testing"
)

// TestCheckRange: a -from/-to that draws nothing of a 10 s run is a bad
// command line.
func TestCheckRange(t *testing.T) {
	for _, tc := range []struct {
		from, to float64
		ok       bool
	}{
		{0, 0, true}, {2, 5, true}, {9.9, 0, true}, {5, 20, true},
		{5, 2, false}, {3, 3, false}, {100, 0, false}, {10, 0, false}, {-1, 0, false}, {0, -2, false},
	} {
		err := checkRange(tc.from, tc.to, 10)
		if (err == nil) != tc.ok || (err != nil && !errors.As(err, new(usageError))) {
			t.Errorf("checkRange(%g, %g, 10) = %v; want ok %v", tc.from, tc.to, err, tc.ok)
		}
	}
}
