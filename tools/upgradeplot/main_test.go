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

// TestLastBucketCutShort: a last bucket the run's end cut short is not
// drawn as a whole one, where its few responses read as the rate falling
// to nothing (a new user's trial: docs/upgradebench.json's last bucket
// held 32 responses against ~3,000).
func TestLastBucketCutShort(t *testing.T) {
	for _, tc := range []struct {
		n               int
		width, duration float64
		want            int
	}{
		{101, 0.1, 10, 100}, {100, 0.1, 10, 100}, {100, 0.1, 9.95, 99}, {5, 0.1, 0, 5}, {3, 0.1, 10, 3},
	} {
		if got := fullBuckets(tc.n, tc.width, tc.duration); got != tc.want {
			t.Errorf("fullBuckets(%d, %g, %g) = %d; want %d", tc.n, tc.width, tc.duration, got, tc.want)
		}
	}
}

// TestSteps: each bucket's value holds from its start to its end, so a
// version's rate rises in the bucket where it began to answer, not half
// a bucket before (a line through the middles drew it rising before its
// upgrade's command).
func TestSteps(t *testing.T) {
	all := func(float64) bool { return true }
	xy := steps([]float64{0, 0, 5}, 0.1, all)
	want := []float64{0, 0.1, 0.2, 0.3}
	if len(xy) != len(want) {
		t.Fatalf("steps = %v; want points at %v", xy, want)
	}
	for i, p := range xy {
		if p.X < want[i]-1e-9 || p.X > want[i]+1e-9 {
			t.Errorf("point %d at %g; want %g", i, p.X, want[i])
		}
	}
	if xy[2].Y != 5 || xy[3].Y != 5 || xy[1].Y != 0 {
		t.Errorf("steps = %v; want 0 until 0.2 s, then 5 to the end", xy)
	}
}

// TestCheckOut: an output name of another format is a bad command line
// (exit 2, as the other bad input), said before anything is read.
func TestCheckOut(t *testing.T) {
	for name, ok := range map[string]bool{"x.svg": true, "a/b.png": true, "x.txt": false, "x": false} {
		err := checkOut(name)
		if (err == nil) != ok || (err != nil && !errors.As(err, new(usageError))) {
			t.Errorf("checkOut(%q) = %v; want ok %v", name, err, ok)
		}
	}
}
