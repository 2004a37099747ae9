package main

import (
	"math"
	"slices"
)

// The throughput comparison runs its rounds in ABBA order: each round is
// four runs of the client, plain, launcher, launcher, plain. A drift of
// the machine's speed that is linear over a round (a neighbour's job
// starting, a CPU's frequency settling) then hits both servers alike: the
// two plain runs sit at times 0 and 3, the two launcher runs at 1 and 2,
// and both pairs have the mean time 1.5. An A/B pair does not cancel it:
// B always runs after A.

// abbaOrder returns the servers of rounds ABBA rounds, run by run:
// false for plain, true for the launcher.
func abbaOrder(rounds int) []bool {
	order := make([]bool, 0, 4*rounds)
	for range rounds {
		order = append(order, false, true, true, false)
	}
	return order
}

// roundRatios returns the launcher's ratio of each ABBA round of xs,
// figures per run in the order of [abbaOrder] (len(xs)/4 rounds; a
// partial round at the end is left out): (L₁ + L₂) / (P₁ + P₂), the mean
// of the round's two launcher runs over the mean of its two plain runs,
// in which a linear drift cancels.
func roundRatios(xs []float64) []float64 {
	var ratios []float64
	for i := 0; i+4 <= len(xs); i += 4 {
		ratios = append(ratios, (xs[i+1]+xs[i+2])/(xs[i]+xs[i+3]))
	}
	return ratios
}

// medianCI is the median of a sample with a distribution-free
// confidence interval for it from order statistics (the sign-test
// interval, e.g. Conover, Practical Nonparametric Statistics, 3rd ed.,
// §3.2): with the sample sorted, [x₍ₖ₎, x₍ₙ₊₁₋ₖ₎] holds the true median
// with probability 1 − 2·P(B ≤ k−1), B ~ Binomial(n, ½), whatever the
// distribution (only independent rounds are assumed). k is the largest
// rank whose coverage is still at least the level asked for; below
// n = 6 no interval reaches 95 %, and the whole range is given with the
// coverage it has.
type medianCI struct {
	Median, Lo, Hi float64
	K, N           int     // ranks K and N+1−K of N (1-based)
	Coverage       float64 // the interval's exact coverage, 0..1
}

// newMedianCI returns xs's median (the mean of the middle two for an
// even count) and its order-statistic confidence interval at level (e.g.
// 0.95). xs must not be empty.
func newMedianCI(xs []float64, level float64) medianCI {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	ci := medianCI{N: n, K: 1, Median: middle(s)}
	ci.Coverage = 1 - 2*binomCDF(n, 0)
	for k := 2; k <= n/2; k++ {
		c := 1 - 2*binomCDF(n, k-1)
		if c < level {
			break
		}
		ci.K, ci.Coverage = k, c
	}
	ci.Lo, ci.Hi = s[ci.K-1], s[n-ci.K]
	return ci
}

// middle is the median of sorted, which must not be empty.
func middle[T ~int64 | ~float64](sorted []T) T {
	n := len(sorted)
	return (sorted[(n-1)/2] + sorted[n/2]) / 2
}

// binomCDF is P(B ≤ j) for B ~ Binomial(n, ½).
func binomCDF(n, j int) float64 {
	p := 0.0
	for i := 0; i <= j && i <= n; i++ {
		p += math.Exp(lchoose(n, i) - float64(n)*math.Ln2)
	}
	return p
}

func lchoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}
