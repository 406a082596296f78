//go:build !((darwin || freebsd || linux || netbsd) && !android && !faketime)

package kernels

import (
	"fmt"
	"runtime"
)

// dlopen reports that run-time libraries are not supported here, so the
// pure-Go paths are used.
func dlopen(name string) (uintptr, error) {
	return 0, fmt.Errorf("open %s: run-time loading not supported on %s", name, runtime.GOOS)
}

func dlsym(lib uintptr, name string) (uintptr, error) {
	return 0, fmt.Errorf("symbol %s: run-time loading not supported on %s", name, runtime.GOOS)
}
