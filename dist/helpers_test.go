package dist

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildFake compiles testdata/<name>.c into a shared library in a
// temporary directory and returns its path; it skips the test when no C
// compiler is installed.
func buildFake(t *testing.T, name string) string {
	t.Helper()
	so, err := compileFake(name, t.TempDir())
	if errors.Is(err, errNoCompiler) {
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return so
}

var errNoCompiler = errors.New("no C compiler (clang-16, cc, gcc) to build the test's fake library")

// compileFake builds testdata/<name>.c into dir/lib<name>.so.
func compileFake(name, dir string) (string, error) {
	var cc string
	for _, c := range []string{"clang-16", "cc", "gcc"} {
		if p, err := exec.LookPath(c); err == nil {
			cc = p
			break
		}
	}
	if cc == "" {
		return "", fmt.Errorf("testdata/%s.c: %w", name, errNoCompiler)
	}
	so := filepath.Join(dir, "lib"+name+".so")
	out, err := exec.Command(cc, "-O1", "-shared", "-fPIC", "-o", so, filepath.Join("testdata", name+".c")).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build testdata/%s.c with %s: %v\n%s", name, cc, err, out)
	}
	return so, nil
}

// envMap returns a getenv over the given KEY=VALUE pairs only.
func envMap(kv ...string) func(string) string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}
