package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStopIsAlwaysAnswered: `launcher stop` gets the supervisor's answer
// before the supervisor exits, every time: systemd's ExecStop and scripts
// read a missing answer as a failed stop. The supervisor used to exit
// while the answer was on its way ("supervisor closed the connection:
// EOF"), more often on a busy machine: so three supervisors stop at once,
// ten times.
func TestStopIsAlwaysAnswered(t *testing.T) {
	for round := range 10 {
		var sups []*sup
		for range 3 {
			sups = append(sups, startSupIn(t, filepath.Join(shortTempDir(t), "s")))
		}
		errs := make(chan error, len(sups))
		var wg sync.WaitGroup
		for i, s := range sups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, errOut, code := s.cli("stop")
				if code != 0 || !strings.Contains(out, "stopped") {
					errs <- fmt.Errorf("round %d, supervisor %d: stop: exit %d, %q %q; want 0 and its answer", round+1, i+1, code, out, errOut)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, s := range sups {
			if err := s.wait(10 * time.Second); err != nil {
				t.Errorf("round %d: the supervisor: %v", round+1, err)
			}
		}
		if t.Failed() {
			return
		}
	}
}
