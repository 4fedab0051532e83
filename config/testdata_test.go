package config

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// envFile is one testdata/*.env file: the environment (KEY=value lines),
// the problems Load must report ("# want: " lines, each the start of one
// problem) and what must not appear in the error ("# secret: " lines).
type envFile struct {
	environ, want, secret []string
}

func readEnvFile(t *testing.T, path string) envFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ef envFile
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# want: "):
			ef.want = append(ef.want, strings.TrimPrefix(line, "# want: "))
		case strings.HasPrefix(line, "# secret: "):
			ef.secret = append(ef.secret, strings.TrimPrefix(line, "# secret: "))
		case line == "", strings.HasPrefix(line, "#"):
		default:
			ef.environ = append(ef.environ, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ef
}

// eachEnvFile runs check on every file pattern matches (there must be one
// at least), each in a subtest named after the file.
func eachEnvFile(t *testing.T, pattern string, check func(t *testing.T, ef envFile)) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s: %v", pattern, err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) { check(t, readEnvFile(t, path)) })
	}
}

// Every testdata/invalid-*.env fails to load with exactly the problems its
// "# want:" lines name, one each, in one error, and shows none of its
// secrets (blackbox_exporter keeps its bad configurations the same way).
func TestInvalidConfigurations(t *testing.T) {
	eachEnvFile(t, "testdata/invalid-*.env", func(t *testing.T, ef envFile) {
		if len(ef.want) == 0 {
			t.Fatal("no # want: line")
		}
		_, err := Load(ef.environ)
		var ce *Error
		if !errors.As(err, &ce) {
			t.Fatalf("Load: %v, want an *Error", err)
		}
		for _, s := range ef.secret {
			if strings.Contains(err.Error(), s) {
				t.Errorf("the error shows the secret %q:\n%v", s, err)
			}
		}
		left := append([]string(nil), ce.problems...)
		for _, w := range ef.want {
			i := indexPrefix(left, w)
			if i < 0 {
				t.Errorf("no problem starts with %q", w)
				continue
			}
			left = append(left[:i], left[i+1:]...)
		}
		for _, p := range left {
			t.Errorf("problem not in the file's # want: lines: %s", p)
		}
	})
}

// Every testdata/valid-*.env loads.
func TestValidConfigurations(t *testing.T) {
	eachEnvFile(t, "testdata/valid-*.env", func(t *testing.T, ef envFile) {
		if _, err := Load(ef.environ); err != nil {
			t.Error(err)
		}
	})
}

func indexPrefix(list []string, prefix string) int {
	for i, s := range list {
		if strings.HasPrefix(s, prefix) {
			return i
		}
	}
	return -1
}
