package health

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// docs/metrics.md explains every reason label value, one table row each,
// and nothing else: a value added here without its row fails.
func TestMetricsDocExplainsEveryReasonLabel(t *testing.T) {
	b, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var reasons, drops []string
	for r := range numReasons {
		reasons = append(reasons, r.String())
	}
	for d := range numDrops {
		drops = append(drops, d.String())
	}
	for _, c := range []struct {
		heading string
		want    []string
	}{
		{"The `reason` of `obmux_disconnects_total`", reasons},
		{"The `reason` of `obmux_dropped_frames_total`", drops},
	} {
		got := tableKeys(t, doc, c.heading)
		slices.Sort(got)
		slices.Sort(c.want)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q lists %v, want %v", metricsDoc, c.heading, got, c.want)
		}
	}
}

const metricsDoc = "../docs/metrics.md"

var tableKey = regexp.MustCompile("^\\| `([a-z0-9_]+)` \\|")

// tableKeys returns the first column of the table that follows heading.
func tableKeys(t *testing.T, doc, heading string) []string {
	t.Helper()
	i := strings.Index(doc, heading)
	if i < 0 {
		t.Fatalf("%s has no %q", metricsDoc, heading)
	}
	var keys []string
	inTable := false
	for _, line := range strings.Split(doc[i:], "\n")[1:] {
		switch {
		case strings.HasPrefix(line, "|"):
			inTable = true
			if m := tableKey.FindStringSubmatch(line); m != nil {
				keys = append(keys, m[1])
			}
		case inTable:
			return keys
		}
	}
	return keys
}
