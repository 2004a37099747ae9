package metrics_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/launcherd/launcher/metrics"
)

func TestUsage(t *testing.T) {
	gens := []metrics.GenerationUsage{
		{Generation: 3, Version: "v1", CPUSeconds: 12.5, MemoryBytes: 40 << 20},
		{Generation: 4, Version: "v2", CPUSeconds: 0.25, MemoryBytes: 9 << 20},
	}
	tests := []struct {
		name     string
		memory   metrics.MemorySource
		gens     []metrics.GenerationUsage
		wantHelp string // in launcher_generation_memory_bytes' help
	}{
		{"memory.current", metrics.MemoryCurrent, gens, "memory.current of its cgroup"},
		{"rss", metrics.MemoryRSS, gens, "resident set sizes"},
		{"no cgroups", metrics.MemoryRSS, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(metrics.NewUsage(tt.memory, func() []metrics.GenerationUsage { return tt.gens }))
			mfs := gather(t, reg)
			wantCPU, wantMem := map[string]float64{}, map[string]float64{}
			for _, g := range tt.gens {
				k := key(map[string]string{"generation": strconv.Itoa(g.Generation), "version": g.Version})
				wantCPU[k], wantMem[k] = g.CPUSeconds, g.MemoryBytes
			}
			if got := series(mfs["launcher_generation_cpu_seconds_total"]); !eqMaps(got, wantCPU) {
				t.Errorf("launcher_generation_cpu_seconds_total = %v; want %v", got, wantCPU)
			}
			if got := series(mfs["launcher_generation_memory_bytes"]); !eqMaps(got, wantMem) {
				t.Errorf("launcher_generation_memory_bytes = %v; want %v", got, wantMem)
			}
			if tt.gens == nil {
				return
			}
			if help := mfs["launcher_generation_memory_bytes"].GetHelp(); !strings.Contains(help, tt.wantHelp) {
				t.Errorf("memory help %q; want it to say %q", help, tt.wantHelp)
			}
			lint(t, reg)
		})
	}
}
