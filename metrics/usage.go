package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// GenerationUsage is what one live generation's processes cost: its
// workers and everything they started.
type GenerationUsage struct {
	Generation int
	Version    string
	// CPUSeconds is the CPU time its processes have used since it
	// started, those that have exited included.
	CPUSeconds float64
	// MemoryBytes is the memory its processes use now.
	MemoryBytes float64
}

// MemorySource says what launcher_generation_memory_bytes measures.
type MemorySource int

const (
	// MemoryCurrent is memory.current of the generation's cgroup, where
	// the cgroup v2 memory controller is enabled for it: anonymous
	// memory, page cache and kernel memory charged to its processes.
	MemoryCurrent MemorySource = iota
	// MemoryRSS is the sum of the resident set sizes of the generation's
	// processes (/proc/PID/statm), where no memory controller is enabled
	// for its cgroup. Pages shared between them count once per process.
	MemoryRSS
)

// Usage exports each live generation's CPU time and memory, read at
// each scrape, so that a new version's cost shows beside the old one's.
// Register it on an explicit registry.
type Usage struct {
	read    func() []GenerationUsage
	cpuDesc *prometheus.Desc
	memDesc *prometheus.Desc
}

// NewUsage returns the collector of launcher_generation_cpu_seconds_total
// and launcher_generation_memory_bytes. read is called at each scrape and
// returns the generations that have a cgroup to measure; memory says what
// their memory figure is, for the help text.
func NewUsage(memory MemorySource, read func() []GenerationUsage) *Usage {
	memHelp := "Memory of a generation's processes (its workers and what they started), bytes: memory.current of its cgroup (cgroup v2 memory controller: anonymous memory, page cache and kernel memory charged to it)."
	if memory == MemoryRSS {
		memHelp = "Memory of a generation's processes (its workers and what they started), bytes: the sum of their resident set sizes from /proc/PID/statm, as no memory controller is enabled for its cgroup (pages shared between processes count once per process)."
	}
	labels := []string{"generation", "version"}
	return &Usage{
		read: read,
		cpuDesc: prometheus.NewDesc("launcher_generation_cpu_seconds_total",
			"CPU time used by a generation's processes (its workers and what they started, exited ones included), seconds: usage_usec of its cgroup's cpu.stat. Only where generations have cgroups.",
			labels, nil),
		memDesc: prometheus.NewDesc("launcher_generation_memory_bytes", memHelp+" Only where generations have cgroups.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (u *Usage) Describe(ch chan<- *prometheus.Desc) {
	ch <- u.cpuDesc
	ch <- u.memDesc
}

// Collect implements prometheus.Collector.
func (u *Usage) Collect(ch chan<- prometheus.Metric) {
	for _, g := range u.read() {
		gen := strconv.Itoa(g.Generation)
		ch <- prometheus.MustNewConstMetric(u.cpuDesc, prometheus.CounterValue, g.CPUSeconds, gen, g.Version)
		ch <- prometheus.MustNewConstMetric(u.memDesc, prometheus.GaugeValue, g.MemoryBytes, gen, g.Version)
	}
}
