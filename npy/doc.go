// Package npy reads and writes NumPy .npy files (format versions 1.0, 2.0 and
// 3.0), the exchange format between ddpm and the Python reference
// implementations it is tested against.
//
// Supported element types are little-endian float32 ("<f4"), float64
// ("<f8"), int64 ("<i8"), int32 ("<i4") and uint8 ("|u1"), in C (row-major)
// order. Fortran-ordered arrays, big-endian data, structured dtypes and
// object arrays are rejected with an error naming the field and the allowed
// values.
//
// The format is described in NumPy's "NEP 1 — A simple file format for NumPy
// arrays": a magic string "\x93NUMPY", a version byte pair, a little-endian
// header length (2 bytes for 1.0, 4 bytes for 2.0 and 3.0), an ASCII (UTF-8
// for 3.0) Python dict literal with the keys 'descr', 'fortran_order' and
// 'shape', padded with spaces and ending in a newline so that the data starts
// at a multiple of 64 bytes, then the raw elements.
//
// Read never allocates much more than the bytes actually present in its
// input: a header that claims a huge shape over a short stream fails with
// io.ErrUnexpectedEOF instead of exhausting memory.
package npy
