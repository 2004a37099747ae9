package supervisor

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestReportStringNamesWhatIsNotKnown: a report's times that were not
// known when it was made say why in words, not "?" (a new user read
// "first connection ?" as a fault).
func TestReportStringNamesWhatIsNotKnown(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    UpgradeReport
		want string
	}{
		{"all known", UpgradeReport{ReadyAfter: 5 * time.Millisecond, FirstConnectionAfter: 9 * time.Millisecond, VerdictAfter: 5009 * time.Millisecond, GoneAfter: 5029 * time.Millisecond},
			"command → ready 5 ms → first connection 9 ms → verdict 5009 ms → gone 5029 ms"},
		{"not judged, old one draining", UpgradeReport{ReadyAfter: 5 * time.Millisecond, VerdictAfter: 6 * time.Millisecond},
			"command → ready 5 ms → first connection not known → verdict 6 ms → gone not yet"},
		{"never ready", UpgradeReport{VerdictAfter: 30 * time.Second, GoneAfter: 30001 * time.Millisecond, Verdict: VerdictFailed},
			"command → ready never → first connection not known → verdict 30000 ms → gone 30001 ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.String(); !strings.Contains(got, "\n  "+tc.want) {
				t.Errorf("String() =\n%s\nwant a line %q", got, tc.want)
			}
		})
	}
}

// An adopted report's unknown times are left out of its JSON, not
// written as year 1 and 0 ns (a new user's recheck).
func TestAdoptedReportLeavesUnknownTimesOut(t *testing.T) {
	b, err := json.Marshal(UpgradeReport{Generation: 2, Version: "v2", From: 1, FromVersion: "v1", Verdict: VerdictFailed, Adopted: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"command"`, `"verdict_after_ns"`} {
		if strings.Contains(string(b), field) {
			t.Errorf("%s; want no %s", b, field)
		}
	}
}
