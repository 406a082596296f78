// Package dl opens shared libraries at run time (purego's dlopen and
// dlsym, no cgo), for the CPU backend's oneDNN and OpenBLAS. On systems
// without run-time loading both functions return errors and the pure-Go
// paths are used.
package dl
