package config

import "strings"

// Suggest returns the variable obmux reads that name, which it does not,
// was most likely meant to be (OBMUX_UPSTREAM_TOKN: OBMUX_UPSTREAM_TOKEN;
// OBMUX_TARGET_NB_UR: OBMUX_TARGET_NB_URL; a lower-case spelling: the
// upper-case one), or "" when none is close.
func Suggest(name string) string {
	up := strings.ToUpper(name)
	best, bestD := "", -1
	consider := func(c string) {
		if c == name {
			return
		}
		if d := distance(up, c); bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	for k := range Known() {
		consider(k)
	}
	// A target's variable: the name up to each _ of what follows
	// OBMUX_TARGET_, with every suffix.
	if rest, ok := strings.CutPrefix(up, Prefix+"TARGET_"); ok {
		for i := range len(rest) {
			if rest[i] != '_' || i == 0 {
				continue
			}
			for _, s := range targetSuffixes {
				consider(Prefix + "TARGET_" + rest[:i] + "_" + s)
			}
		}
	}
	if bestD < 0 || bestD > max(1, min(3, len(best)/6)) {
		return ""
	}
	return best
}

// distance is the Levenshtein distance of a and b (bytes: variable names
// are ASCII).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
