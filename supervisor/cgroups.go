package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/launcherd/launcher/metrics"
)

// EnvProcessGroups, set to 1 in the supervisor's environment, makes it
// keep its workers' process trees as process groups even where it could
// create cgroups. It is for tests of that fallback, not for production.
const EnvProcessGroups = "LAUNCHER_TEST_PROCESS_GROUPS"

// cgroups puts each worker in a cgroup v2 of its own, where the
// supervisor may create cgroups in its own: as root, or under systemd with
// Delegate=yes. The layout, below the supervisor's cgroup:
//
//	launcher-NAME-HASH/           one per state directory (HASH of its path)
//	  gen-N/                      one per generation: its CPU time and memory
//	    worker-I/                 one per worker process: its tree, killed alone
//
// No controller is enabled on the supervisor's own cgroup (it holds the
// supervisor, and cgroup v2 lets a non-root cgroup that holds processes
// enable none for its children), so the generations' cgroups get
// memory.current only where the memory controller is already enabled
// there; launcher-…/ holds no process and enables it for its generations
// when it can. CPU time (cpu.stat) is there either way.
//
// Elsewhere (no cgroup v2, no permission, a kernel before 5.14 without
// cgroup.kill) workers' trees are their process groups, and no usage is
// measured. The choice is logged once, at start.
type cgroups struct {
	log   *slog.Logger
	mount string // where the cgroup v2 hierarchy is mounted; "" if nowhere

	mu     sync.Mutex
	base   string         // launcher-NAME-HASH, "" with process groups
	groups bool           // new workers get process groups: starts in a cgroup failed
	memory bool           // the generations' cgroups have memory.current
	gens   map[int]string // generation → its cgroup
}

// openCgroups decides how the supervisor of stateDir keeps its workers'
// trees, sets up its cgroup if it can, and logs the choice.
func openCgroups(stateDir string, forceGroups bool, log *slog.Logger) *cgroups {
	c := &cgroups{log: log, mount: cgroup2Mount(), gens: map[int]string{}}
	if err := c.setUp(stateDir, forceGroups); err != nil {
		log.Info("process trees: process groups", "reason", err)
		return c
	}
	memory := "RSS of its processes (no memory controller for its cgroups)"
	if c.memory {
		memory = "memory.current"
	}
	log.Info("process trees: cgroup v2", "cgroup", c.base, "generation_memory", memory)
	return c
}

func (c *cgroups) setUp(stateDir string, forceGroups bool) error {
	if forceGroups {
		return fmt.Errorf("%s=1 (for tests)", EnvProcessGroups)
	}
	if c.mount == "" {
		return errors.New("no cgroup v2 hierarchy mounted")
	}
	own, err := ownCgroup()
	if err != nil {
		return err
	}
	base := filepath.Join(c.mount, own, cgroupName(stateDir))
	if err := os.Mkdir(base, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot create a cgroup in %s (run as root, or with Delegate=yes under systemd): %w", own, err)
	}
	if _, err := os.Stat(filepath.Join(base, "cgroup.kill")); err != nil {
		unix.Rmdir(base)
		return errors.New("no cgroup.kill (Linux 5.14 or later needed)")
	}
	// launcher-…/ holds no process: it may enable the memory controller
	// for the generations, if its parent passes it on.
	if ctl, err := os.ReadFile(filepath.Join(base, "cgroup.controllers")); err == nil && hasWord(string(ctl), "memory") {
		if err := os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
			c.log.Debug("cannot enable the memory controller for the generations' cgroups", "err", err)
		} else {
			c.memory = true
		}
	}
	c.base = base
	c.sweep()
	return nil
}

// cgroupName is the name of the supervisor's cgroup for stateDir: one
// state directory has one supervisor at a time, and its generation
// numbers are never reused.
func cgroupName(stateDir string) string {
	sum := sha256.Sum256([]byte(stateDir))
	name := unsafeNameRE().ReplaceAllString(filepath.Base(stateDir), "_")
	if len(name) > 32 {
		name = name[:32]
	}
	return "launcher-" + name + "-" + hex.EncodeToString(sum[:4])
}

// sweep removes the empty cgroups a killed supervisor left; those of the
// workers it will adopt hold processes and stay.
func (c *cgroups) sweep() {
	gens, _ := filepath.Glob(filepath.Join(c.base, "gen-*"))
	for _, g := range gens {
		workers, _ := filepath.Glob(filepath.Join(g, "worker-*"))
		for _, w := range workers {
			if populated, err := cgroupPopulated(w); err == nil && !populated {
				unix.Rmdir(w)
			}
		}
		unix.Rmdir(g) // EBUSY while a worker's cgroup is left
	}
}

// forStart returns a new cgroup for worker index of generation gen, opened
// for clone3's CLONE_INTO_CGROUP; ("", -1, nil) with process groups.
func (c *cgroups) forStart(gen, index int) (dir string, fd int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.base == "" || c.groups {
		return "", -1, nil
	}
	genDir := filepath.Join(c.base, "gen-"+strconv.Itoa(gen))
	if err := os.Mkdir(genDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", -1, fmt.Errorf("cgroup for generation %d: %w", gen, err)
	}
	if c.gens[gen] == "" {
		c.gens[gen] = genDir
	}
	// worker-I, or worker-I.K while an earlier one of the same index is
	// still being emptied.
	for k := 0; ; k++ {
		dir = filepath.Join(genDir, "worker-"+strconv.Itoa(index))
		if k > 0 {
			dir += "." + strconv.Itoa(k)
		}
		err = os.Mkdir(dir, 0o755)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || k >= 100 {
			return "", -1, fmt.Errorf("cgroup for worker %d of generation %d: %w", index, gen, err)
		}
	}
	fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Rmdir(dir)
		return "", -1, fmt.Errorf("cgroup for worker %d of generation %d: %w", index, gen, err)
	}
	return dir, fd, nil
}

// disable falls back to process groups for the workers started from now
// on, after a start in a cgroup failed where one without succeeded.
func (c *cgroups) disable(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.groups {
		c.log.Warn("process trees: starting a worker in its cgroup failed; process groups from now on", "err", err)
		c.groups = true
	}
}

// unsafeNameRE matches what a cgroup's name should not hold.
var unsafeNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[^A-Za-z0-9_.-]+`) })

// workerCgroupRE matches the cgroup of a worker, relative to the
// hierarchy's root: …/launcher-…/gen-N/worker-I[.K].
var workerCgroupRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`/launcher-[^/]+/gen-(\d+)/worker-\d+(\.\d+)?$`) })

// adopted returns the tree of pid, a worker of generation gen that a
// killed supervisor started: its cgroup, as /proc/PID/cgroup names it,
// if that is a worker's cgroup of generation gen; else its process group.
func (c *cgroups) adopted(pid, gen int) tree {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.base != "" && !c.groups {
		rel, err := cgroupOf(pid)
		m := workerCgroupRE().FindStringSubmatch(rel)
		if err == nil && m != nil && m[1] == strconv.Itoa(gen) {
			dir := filepath.Join(c.mount, rel)
			if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err == nil {
				if c.gens[gen] == "" {
					c.gens[gen] = filepath.Dir(dir)
				}
				return cgroupTree{dir: dir}
			}
		}
	}
	return leaderTree(pid)
}

// removeGeneration removes generation gen's cgroup, once the loop says
// none of its processes is left and none will start.
func (c *cgroups) removeGeneration(gen int) {
	c.mu.Lock()
	dir := c.gens[gen]
	delete(c.gens, gen)
	base := c.base
	c.mu.Unlock()
	if dir == "" {
		return
	}
	// Its workers' cgroups went with their processes; one whose
	// processes outlived treeWait is left, and keeps it.
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		c.log.Warn("remove a generation's cgroup", "generation", gen, "cgroup", dir, "err", err)
		return
	}
	// An adopted generation's cgroup may be under another supervisor's.
	if parent := filepath.Dir(dir); parent != base {
		unix.Rmdir(parent)
	}
}

// close removes the supervisor's cgroup if nothing is left in it.
func (c *cgroups) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.base != "" {
		unix.Rmdir(c.base) // EBUSY while workers are left (a start that adopted none)
	}
}

// usage reads what generation gen's processes cost, if it has a cgroup.
func (c *cgroups) usage(gen int) (metrics.GenerationUsage, bool) {
	c.mu.Lock()
	dir := c.gens[gen]
	c.mu.Unlock()
	if dir == "" {
		return metrics.GenerationUsage{}, false
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return metrics.GenerationUsage{}, false
	}
	u := metrics.GenerationUsage{Generation: gen}
	if usec, ok := statField(string(b), "usage_usec"); ok {
		u.CPUSeconds = float64(usec) / 1e6
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.current")); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		u.MemoryBytes = float64(n)
	} else {
		u.MemoryBytes = float64(treeRSS(dir))
	}
	return u, true
}
