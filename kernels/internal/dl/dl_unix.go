//go:build (darwin || freebsd || linux || netbsd) && !android && !faketime

package dl

import "github.com/ebitengine/purego"

// Open opens a shared library by name (RTLD_NOW | RTLD_GLOBAL).
func Open(name string) (uintptr, error) {
	return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

// Sym returns the address of symbol name in lib.
func Sym(lib uintptr, name string) (uintptr, error) { return purego.Dlsym(lib, name) }
