package config

import (
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// readmes are the READMEs whose variable table must list exactly the
// variables obmux reads, with the first cell of their table's header.
var readmes = []struct{ file, header string }{
	{"../README.md", "variable"},
	{"../README.zh-CN.md", "变量"},
}

// TestReadmeVariables fails when a variable obmux reads is missing from a
// README's variable table, or a table lists one obmux does not read: the
// two READMEs and the configuration stay in step.
func TestReadmeVariables(t *testing.T) {
	want := documentedNames()
	for _, r := range readmes {
		b, err := os.ReadFile(r.file)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := variableTable(string(b), r.header)
		if err != nil {
			t.Errorf("%s: %v", r.file, err)
			continue
		}
		for _, p := range tableProblems(rows, want) {
			t.Errorf("%s: %s", r.file, p)
		}
	}
}

// documentedNames is every variable as a README's table spells it: the
// names of Known, and OBMUX_TARGET_<NAME>_ with each target suffix.
func documentedNames() map[string]bool {
	names := Known()
	for _, s := range targetSuffixes {
		names[Prefix+"TARGET_<NAME>_"+s] = true
	}
	for _, s := range natsSuffixes {
		names[Prefix+"NATS_CALLER_<NAME>_"+s] = true
	}
	return names
}

// varName matches a variable, or a continuation of the row's first one
// (`_FILTER_FILE`), in backquotes.
var varName = regexp.MustCompile("`(OBMUX_[A-Z0-9_<>]+|_[A-Z0-9_]+)`")

// variableTable returns, for each row of the first Markdown table in doc
// whose header's first cell is header, the variables named in its first
// cell, continuations expanded.
func variableTable(doc, header string) ([][]string, error) {
	lines := strings.Split(doc, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return firstCell(l) == header })
	if start < 0 {
		return nil, errNoTable(header)
	}
	var rows [][]string
	for _, l := range lines[start+2:] {
		if !strings.HasPrefix(strings.TrimSpace(l), "|") {
			break
		}
		var names []string
		for _, m := range varName.FindAllStringSubmatch(firstCell(l), -1) {
			name := m[1]
			if strings.HasPrefix(name, "_") && len(names) > 0 {
				name = continuationPrefix(names[0]) + name[1:]
			}
			names = append(names, name)
		}
		rows = append(rows, names)
	}
	return rows, nil
}

type errNoTable string

func (e errNoTable) Error() string {
	return "no variable table (a table whose header starts with | " + string(e) + " |)"
}

// firstCell returns the first cell of a table row, trimmed, or "".
func firstCell(line string) string {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "|") {
		return ""
	}
	cell, _, _ := strings.Cut(line[1:], "|")
	return strings.TrimSpace(cell)
}

// continuationPrefix is what a `_SUFFIX` after first stands for the rest
// of: OBMUX_TARGET_<NAME>_, OBMUX_FORWARD_ or OBMUX_.
func continuationPrefix(first string) string {
	for _, p := range []string{Prefix + "TARGET_<NAME>_", Prefix + "FORWARD_"} {
		if strings.HasPrefix(first, p) {
			return p
		}
	}
	return Prefix
}

// tableProblems compares a table's rows with the names it must list.
func tableProblems(rows [][]string, want map[string]bool) []string {
	var problems []string
	seen := map[string]bool{}
	for i, names := range rows {
		if len(names) == 0 {
			problems = append(problems, "row "+strconv.Itoa(i+1)+" of the variable table names no `OBMUX_...` variable in its first cell")
		}
		for _, n := range names {
			switch {
			case !want[n]:
				problems = append(problems, n+": listed in the variable table, but obmux reads no such variable")
			case seen[n]:
				problems = append(problems, n+": listed twice in the variable table")
			}
			seen[n] = true
		}
	}
	var missing []string
	for n := range want {
		if !seen[n] {
			missing = append(missing, n+": obmux reads it, but the variable table has no row for it")
		}
	}
	sort.Strings(missing)
	return append(problems, missing...)
}

// The checker itself: it finds a missing row, a stale row, a duplicate and
// a row without a variable, and expands continuations.
func TestReadmeTableChecker(t *testing.T) {
	want := map[string]bool{"OBMUX_A": true, "OBMUX_B_X": true, "OBMUX_TARGET_<NAME>_URL": true,
		"OBMUX_TARGET_<NAME>_FILTER": true, "OBMUX_TARGET_<NAME>_FILTER_FILE": true, "OBMUX_FORWARD_GROUPS": true, "OBMUX_FORWARD_GROUPS_DENY": true}
	doc := "text `OBMUX_GONE` outside the table\n\n" +
		"| variable | default | meaning |\n|---|---|---|\n" +
		"| `OBMUX_A` / `_B_X` | x | `OBMUX_NOT_A_ROW_NAME` in another cell |\n" +
		"| `OBMUX_TARGET_<NAME>_FILTER` / `_FILTER_FILE` | | |\n" +
		"| `OBMUX_FORWARD_GROUPS`, `_GROUPS_DENY` | | |\n" +
		"| `OBMUX_A` | | twice |\n" +
		"| `OBMUX_STALE` | | |\n" +
		"| nothing | | |\n" +
		"\n| `OBMUX_TARGET_<NAME>_URL` | after the table |\n"
	rows, err := variableTable(doc, "variable")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rows[0], " "); got != "OBMUX_A OBMUX_B_X" {
		t.Errorf("row 1 read as %q", got)
	}
	if got := strings.Join(rows[1], " "); got != "OBMUX_TARGET_<NAME>_FILTER OBMUX_TARGET_<NAME>_FILTER_FILE" {
		t.Errorf("row 2 read as %q", got)
	}
	got := tableProblems(rows, want)
	wantProblems := []string{
		"OBMUX_A: listed twice",
		"OBMUX_STALE: listed in the variable table, but obmux reads no such variable",
		"row 6 of the variable table names no",
		"OBMUX_TARGET_<NAME>_URL: obmux reads it, but the variable table has no row for it",
	}
	if len(got) != len(wantProblems) {
		t.Errorf("problems:\n%s", strings.Join(got, "\n"))
	}
	for _, w := range wantProblems {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.HasPrefix(p, w) }) {
			t.Errorf("no problem %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
	if _, err := variableTable("| 变量 | x |\n", "variable"); err == nil {
		t.Error("a document without the table was accepted")
	}
}
