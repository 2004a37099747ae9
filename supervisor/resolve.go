package supervisor

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
)

// release is what a generation runs.
type release struct {
	Version string // label: the release directory name, or NAME@sha
	Path    string // resolved executable (symlinks followed)
}

// ErrBadRelease wraps every reason an upgrade target is refused before
// anything starts.
var ErrBadRelease = errors.New("bad release")

// versionRE is compiled at first use, not at package initialisation:
// its repetition compiles into ~2000 allocations, on the way of every
// launcher command's start (as hostnameRE's and the cgroups' would be).
var versionRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`) })

// IsVersion reports whether name is one the supervisor takes as a
// VERSION (a directory of --releases): 1–128 letters, digits and . _ + -,
// starting with a letter or digit. Anything with a slash is a path.
func IsVersion(name string) bool { return versionRE().MatchString(name) }

// resolve turns an upgrade argument into a release: "" re-resolves the
// start command (a "current" symlink may point elsewhere now), a VERSION
// names Releases/VERSION/NAME, anything with a slash is a path.
func (s *Supervisor) resolve(arg string) (release, error) {
	switch {
	case arg == "":
		return s.resolvePath(s.cfg.Command[0], "")
	case strings.Contains(arg, "/"):
		// Refuse a path out of --releases before looking at it; resolvePath
		// checks again after following symlinks, so no name leads outside.
		if !filepath.IsAbs(arg) {
			return release{}, fmt.Errorf("%w: %s: give an absolute path (the launcher CLI makes it so)", ErrBadRelease, arg)
		}
		if _, ok := s.inReleases(filepath.Clean(arg)); !ok {
			// A path through a symlink (a `current` link beside
			// --releases) may still lead inside it.
			real, err := filepath.EvalSymlinks(arg)
			if _, in := s.inReleases(real); err != nil || !in {
				return release{}, fmt.Errorf("%w: %s is outside --releases %s", ErrBadRelease, arg, s.cfg.Releases)
			}
		}
		return s.resolvePath(arg, "")
	case !IsVersion(arg):
		return release{}, fmt.Errorf("%w: %q is not a version name (up to 128 letters, digits, . _ + -, the first a letter or digit)", ErrBadRelease, arg)
	case s.cfg.Releases == "":
		return release{}, fmt.Errorf("%w: upgrade to version %q needs a supervisor started with --releases DIR (launcher start --releases DIR ...); this one has none: give the release's path instead", ErrBadRelease, arg)
	default:
		p := filepath.Join(s.cfg.Releases, arg, s.exeName)
		if _, err := os.Stat(filepath.Join(s.cfg.Releases, arg)); err != nil {
			return release{}, fmt.Errorf("%w: version %q is not in %s", ErrBadRelease, arg, s.cfg.Releases)
		}
		return s.resolvePath(p, arg)
	}
}

func (s *Supervisor) resolvePath(p, version string) (release, error) {
	if !strings.Contains(p, "/") {
		lp, err := exec.LookPath(p)
		if err != nil {
			return release{}, fmt.Errorf("%w: %w", ErrBadRelease, err)
		}
		p = lp
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return release{}, fmt.Errorf("%w: %w", ErrBadRelease, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A link to nothing is there, and says where it leads (a recheck:
		// "no such file" of a file that exists as a dangling link).
		if to, lerr := os.Readlink(abs); lerr == nil {
			return release{}, fmt.Errorf("%w: %s: a symbolic link to %s, which does not exist", ErrBadRelease, p, to)
		}
		return release{}, fmt.Errorf("%w: %s: no such file", ErrBadRelease, p)
	case err != nil:
		// A symlink loop, a component that is not a directory, no
		// permission: said as they are, not as a missing file (a new
		// user's trial: a loop read "no such file").
		why := strings.TrimPrefix(err.Error(), "EvalSymlinks: ")
		if why == "too many links" {
			why = "a symbolic link loop (too many links to follow)"
		}
		return release{}, fmt.Errorf("%w: %s: %s", ErrBadRelease, p, why)
	}
	rel, ok := s.inReleases(real)
	if !ok {
		return release{}, fmt.Errorf("%w: %s resolves to %s, outside --releases %s", ErrBadRelease, p, real, s.cfg.Releases)
	}
	if err := checkExecutable(real); err != nil {
		// Through a link (current/hello), the file it leads to is what
		// the operator must fix (a new user's recheck).
		name := p
		if real != abs {
			name = fmt.Sprintf("%s (%s)", p, real)
		}
		return release{}, fmt.Errorf("%w: %s: %w", ErrBadRelease, name, err)
	}
	if version == "" && rel != "" {
		version = strings.SplitN(rel, "/", 2)[0]
	}
	if version == "" {
		id, err := releaseID(real)
		if err != nil {
			return release{}, fmt.Errorf("%w: %w", ErrBadRelease, err)
		}
		version = filepath.Base(real) + "@" + id
	}
	return release{Version: version, Path: real}, nil
}

// replaced reports whether the file of a release labelled by its content
// (NAME@ID, outside --releases: see releaseID) holds another build now,
// or is gone, and what it is now ("" when gone or unreadable). A release
// named by its --releases directory has no such label: false.
func (r release) replaced() (now string, changed bool) {
	name, id, ok := strings.Cut(r.Version, "@")
	if !ok || name != filepath.Base(r.Path) {
		return "", false
	}
	cur, err := releaseID(r.Path)
	if err != nil {
		return "", true
	}
	return name + "@" + cur, cur != id
}

// inReleases reports whether path lies inside --releases (always true when
// none is set) and returns it relative to the releases directory.
func (s *Supervisor) inReleases(path string) (string, bool) {
	if s.releasesReal == "" {
		return "", true
	}
	for _, root := range []string{s.releasesReal, s.releasesAbs} {
		rel, err := filepath.Rel(root, path)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
			return rel, true
		}
	}
	return "", false
}

// checkExecutable refuses what cannot start: not a regular file, not
// executable, or an ELF binary for another machine.
func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	if st.Mode().Perm()&0o111 == 0 {
		return errors.New("not executable")
	}
	f, err := elf.Open(path)
	if err != nil {
		return checkScript(path) // a script or another format (binfmt_misc): exec decides the rest
	}
	defer f.Close()
	if want, ok := elfMachine[runtime.GOARCH]; ok && f.Machine != want {
		return fmt.Errorf("built for %s, this machine is %s", f.Machine, runtime.GOARCH)
	}
	return nil
}

// checkScript refuses a script whose #! line names no interpreter that
// can run: exec(2) then fails with ENOENT, as if the script itself were
// missing ("fork/exec PATH: no such file or directory"). A line ending in
// a carriage return (a script saved with CRLF line endings) names an
// interpreter with a "\r" at its end, which is never there. Anything
// else is left to exec (execve(2): the interpreter's own #! is not
// followed; binfmt_misc may take other formats).
func checkScript(path string) error { return checkScriptAt(path, 0) }

// maxInterpreterDepth is how many scripts deep exec follows interpreters
// that are scripts themselves (binfmt_script; fs/exec.c gives up past 4
// with ELOOP).
const maxInterpreterDepth = 4

func checkScriptAt(path string, depth int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 256) // the kernel reads at most BINPRM_BUF_SIZE (256) bytes of it
	n, _ := io.ReadFull(f, b)
	line, _, found := bytes.Cut(b[:n], []byte("\n"))
	rest, ok := bytes.CutPrefix(line, []byte("#!"))
	if !ok {
		return nil
	}
	// A carriage return (CRLF line endings) is part of the name when
	// nothing follows the name: exec then looks for "/bin/sh\r". After an
	// argument it is the argument's, which the interpreter may take.
	if name, _, _ := strings.Cut(strings.TrimLeft(string(rest), " \t"), " "); strings.HasSuffix(name, "\r") && !strings.ContainsAny(name, "\t") {
		return fmt.Errorf("its #! line ends with a carriage return (CRLF line endings): exec looks for %q", name)
	}
	fields := strings.Fields(string(rest))
	if len(fields) == 0 {
		return errors.New("its #! line names no interpreter")
	}
	interp := fields[0]
	// A line longer than what the kernel reads may lose its argument,
	// not its interpreter's name: without a space, tab or NUL after the
	// name within the buffer's last byte, binfmt_script takes it for cut
	// (ENOEXEC).
	if !found && n == len(b) {
		name := bytes.TrimLeft(b[2:len(b)-1], " \t")
		if bytes.IndexAny(name, " \t\x00") < 0 {
			return fmt.Errorf("its #! line's interpreter path runs past the %d bytes of it that exec reads: exec fails (exec format error)", len(b))
		}
	}
	st, err := os.Stat(interp)
	switch {
	case err != nil:
		return fmt.Errorf("its interpreter %s (its #! line) does not exist", interp)
	case !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("its interpreter %s (its #! line) is not an executable file", interp)
	case depth+1 >= maxInterpreterDepth:
		return nil // exec says what it finds deeper
	}
	if err := checkScriptAt(interp, depth+1); err != nil {
		return fmt.Errorf("its interpreter %s (its #! line) is a script: %w", interp, err)
	}
	return nil
}

var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386,
	"arm": elf.EM_ARM, "riscv64": elf.EM_RISCV, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390,
}

// releaseID names an executable outside --releases by its content, as 8
// hex digits of a SHA-256: of its build ID where the ELF file has one, of
// the whole file otherwise (a script, a binary linked without one). A
// build ID is the linker's hash of the program it wrote (Go's
// ".note.go.buildid" ends with the hash of the executable's content; the
// GNU linker's ".note.gnu.build-id", NT_GNU_BUILD_ID, is a hash of its
// output), so it tells releases apart as the whole file's hash does,
// in microseconds: hashing a 10–20 MB Go binary took 12–16 ms of a
// SIGHUP upgrade's way to its new generation.
func releaseID(path string) (string, error) {
	if id := buildID(path); id != nil {
		sum := sha256.Sum256(id)
		return hex.EncodeToString(sum[:])[:8], nil
	}
	return fileSum(path)
}

// buildID returns the build ID note of the ELF file at path (Go's, else
// the GNU linker's), or nil when it is not ELF or has none.
func buildID(path string) []byte {
	f, err := elf.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	for _, n := range []struct {
		section, owner string
		typ            uint32
	}{{".note.go.buildid", "Go\x00\x00", 4}, {".note.gnu.build-id", "GNU\x00", 3}} {
		s := f.Section(n.section)
		if s == nil || s.Type != elf.SHT_NOTE {
			continue
		}
		b, err := s.Data()
		if err != nil {
			continue
		}
		if desc := noteDesc(b, f.ByteOrder, n.owner, n.typ); len(desc) > 0 {
			return desc
		}
	}
	return nil
}

// noteDesc returns the descriptor of the first note in b of owner and
// type typ (ELF notes: namesz, descsz, type, then the name and the
// descriptor, each padded to 4 bytes; elf(5)).
func noteDesc(b []byte, bo binary.ByteOrder, owner string, typ uint32) []byte {
	for len(b) >= 12 {
		namesz, descsz, t := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
		b = b[12:]
		nameEnd := (uint64(namesz) + 3) &^ 3
		descEnd := nameEnd + (uint64(descsz)+3)&^3
		if descEnd > uint64(len(b)) {
			return nil
		}
		if t == typ && string(b[:namesz]) == owner {
			return b[nameEnd : nameEnd+uint64(descsz)]
		}
		b = b[descEnd:]
	}
	return nil
}

// fileSum is 8 hex digits of the SHA-256 of the file at path.
func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:8], nil
}
