//go:build (darwin || freebsd || linux || netbsd) && !android && !faketime

package blas

import "github.com/ebitengine/purego"

// dlopen opens a shared library by name (RTLD_NOW | RTLD_GLOBAL).
func dlopen(name string) (uintptr, error) {
	return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

// dlsym returns the address of symbol name in lib.
func dlsym(lib uintptr, name string) (uintptr, error) { return purego.Dlsym(lib, name) }
