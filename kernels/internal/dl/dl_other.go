//go:build !((darwin || freebsd || linux || netbsd) && !android && !faketime)

package dl

import (
	"fmt"
	"runtime"
)

// Open reports that run-time libraries are not supported here, so the
// pure-Go paths are used.
func Open(name string) (uintptr, error) {
	return 0, fmt.Errorf("open %s: run-time loading not supported on %s", name, runtime.GOOS)
}

// Sym reports that run-time libraries are not supported here.
func Sym(lib uintptr, name string) (uintptr, error) {
	return 0, fmt.Errorf("symbol %s: run-time loading not supported on %s", name, runtime.GOOS)
}
