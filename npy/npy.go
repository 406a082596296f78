package npy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
)

// DType is a NumPy array-protocol type string as it appears in the 'descr'
// field of a .npy header.
type DType string

// The element types this package reads and writes.
const (
	Float32 DType = "<f4" // IEEE 754 binary32, little-endian
	Float64 DType = "<f8" // IEEE 754 binary64, little-endian
	Int64   DType = "<i8" // two's complement 64-bit, little-endian
	Int32   DType = "<i4" // two's complement 32-bit, little-endian
	Uint8   DType = "|u1" // unsigned byte
)

// Size returns the number of bytes of one element, or 0 for an unsupported
// type.
func (d DType) Size() int {
	switch d {
	case Float32, Int32:
		return 4
	case Float64, Int64:
		return 8
	case Uint8:
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool { return d == Float32 || d == Float64 }

// ErrFormat is wrapped by every error about malformed or unsupported input.
var ErrFormat = errors.New("npy: bad format")

// MaxHeaderLen bounds the header length Read accepts (NumPy itself refuses
// headers over 10000 bytes by default; this is more generous but still
// bounded).
const MaxHeaderLen = 1 << 20

// maxDims bounds the number of dimensions (NumPy's own limit is 64).
const maxDims = 64

var magic = []byte("\x93NUMPY")

// Array is an n-dimensional array in C order. Its elements are kept as the
// little-endian bytes of DType; the accessors convert them.
type Array struct {
	// Shape holds the extent of each dimension; an empty Shape is a scalar
	// with one element.
	Shape []int
	// DType is the element type.
	DType DType
	data  []byte // len = Len() * DType.Size()
}

// Len returns the number of elements, the product of Shape (1 for a scalar).
func (a *Array) Len() int {
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

// Bytes returns the raw little-endian element bytes. The slice aliases the
// array; do not modify it.
func (a *Array) Bytes() []byte { return a.data }

// Float32s returns the elements converted to float32 (float64 is rounded to
// nearest, integers are converted exactly up to 2^24). It returns a new
// slice.
func (a *Array) Float32s() []float32 {
	out := make([]float32, a.Len())
	if a.DType == Float32 {
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(a.data[4*i:]))
		}
		return out
	}
	for i := range out {
		out[i] = float32(a.at(i))
	}
	return out
}

// Float64s returns the elements converted to float64 (exact for every
// supported type except int64 beyond 2^53). It returns a new slice.
func (a *Array) Float64s() []float64 {
	out := make([]float64, a.Len())
	for i := range out {
		out[i] = a.at(i)
	}
	return out
}

// Int64s returns the elements as int64. Integer types convert exactly;
// floating-point arrays are an error, since truncating them silently would
// hide a wrong file.
func (a *Array) Int64s() ([]int64, error) {
	if a.DType.IsFloat() {
		return nil, fmt.Errorf("npy: Int64s: array has floating-point dtype %q, want an integer dtype (<i8, <i4, |u1)", a.DType)
	}
	out := make([]int64, a.Len())
	for i := range out {
		switch a.DType {
		case Int64:
			out[i] = int64(binary.LittleEndian.Uint64(a.data[8*i:]))
		case Int32:
			out[i] = int64(int32(binary.LittleEndian.Uint32(a.data[4*i:])))
		case Uint8:
			out[i] = int64(a.data[i])
		}
	}
	return out, nil
}

// at returns element i as float64.
func (a *Array) at(i int) float64 {
	switch a.DType {
	case Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(a.data[4*i:])))
	case Float64:
		return math.Float64frombits(binary.LittleEndian.Uint64(a.data[8*i:]))
	case Int64:
		return float64(int64(binary.LittleEndian.Uint64(a.data[8*i:])))
	case Int32:
		return float64(int32(binary.LittleEndian.Uint32(a.data[4*i:])))
	case Uint8:
		return float64(a.data[i])
	}
	return math.NaN()
}

// checkShape validates shape and returns its element count, failing on
// negative extents and on counts whose byte size overflows int.
func checkShape(shape []int, elemSize int) (int, error) {
	if len(shape) > maxDims {
		return 0, fmt.Errorf("%w: shape has %d dimensions, at most %d allowed", ErrFormat, len(shape), maxDims)
	}
	n := 1
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: shape[%d] = %d, want >= 0", ErrFormat, i, d)
		}
		if d != 0 && n > math.MaxInt/elemSize/d {
			return 0, fmt.Errorf("%w: shape %v has too many elements", ErrFormat, shape)
		}
		n *= d
	}
	return n, nil
}

func newArray(shape []int, dt DType, n int) *Array {
	return &Array{Shape: append([]int(nil), shape...), DType: dt, data: make([]byte, n*dt.Size())}
}

// newFrom returns an array of type dt holding a copy of data, each element
// encoded into its little-endian bytes by put; fn names the caller in
// errors.
func newFrom[T any](fn string, shape []int, dt DType, data []T, put func(dst []byte, v T)) (*Array, error) {
	n, err := checkShape(shape, dt.Size())
	if err != nil {
		return nil, err
	}
	if n != len(data) {
		return nil, fmt.Errorf("npy: %s: shape %v needs %d elements, data has %d", fn, shape, n, len(data))
	}
	a := newArray(shape, dt, n)
	size := dt.Size()
	for i, v := range data {
		put(a.data[i*size:], v)
	}
	return a, nil
}

// NewFloat32 returns an array of the given shape holding a copy of data,
// which must have exactly product(shape) elements.
func NewFloat32(shape []int, data []float32) (*Array, error) {
	return newFrom("NewFloat32", shape, Float32, data, func(b []byte, v float32) {
		binary.LittleEndian.PutUint32(b, math.Float32bits(v))
	})
}

// NewFloat64 returns an array of the given shape holding a copy of data,
// which must have exactly product(shape) elements.
func NewFloat64(shape []int, data []float64) (*Array, error) {
	return newFrom("NewFloat64", shape, Float64, data, func(b []byte, v float64) {
		binary.LittleEndian.PutUint64(b, math.Float64bits(v))
	})
}

// NewInt64 returns an array of the given shape holding a copy of data,
// which must have exactly product(shape) elements.
func NewInt64(shape []int, data []int64) (*Array, error) {
	return newFrom("NewInt64", shape, Int64, data, func(b []byte, v int64) {
		binary.LittleEndian.PutUint64(b, uint64(v))
	})
}

// NewUint8 returns an array of the given shape holding a copy of data,
// which must have exactly product(shape) elements.
func NewUint8(shape []int, data []uint8) (*Array, error) {
	return newFrom("NewUint8", shape, Uint8, data, func(b []byte, v uint8) { b[0] = v })
}

// Read decodes one .npy array from r. It reads exactly the header and the
// data, so several arrays can be read back to back from one stream.
func Read(r io.Reader) (*Array, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("npy: read magic: %w", noEOF(err))
	}
	if !bytes.Equal(pre[:6], magic) {
		return nil, fmt.Errorf("%w: missing magic \"\\x93NUMPY\" (got %q)", ErrFormat, pre[:6])
	}
	major, minor := pre[6], pre[7]
	var hlen int
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: read header length: %w", noEOF(err))
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy: read header length: %w", noEOF(err))
		}
		hlen = int(binary.LittleEndian.Uint32(b[:]))
	default:
		return nil, fmt.Errorf("%w: version %d.%d, supported major versions are 1, 2 and 3", ErrFormat, major, minor)
	}
	if hlen > MaxHeaderLen {
		return nil, fmt.Errorf("%w: header length %d exceeds the limit of %d bytes", ErrFormat, hlen, MaxHeaderLen)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("npy: read %d-byte header: %w", hlen, noEOF(err))
	}
	h, err := parseHeader(hdr, major)
	if err != nil {
		return nil, err
	}
	n, err := checkShape(h.shape, h.dtype.Size())
	if err != nil {
		return nil, err
	}
	size := n * h.dtype.Size()
	data, err := readN(r, size)
	if err != nil {
		return nil, fmt.Errorf("npy: read %d data bytes for shape %v %s: %w", size, h.shape, h.dtype, noEOF(err))
	}
	return &Array{Shape: h.shape, DType: h.dtype, data: data}, nil
}

// readN reads exactly n bytes, growing its buffer only as data arrives so
// that a lying header cannot force a huge allocation.
func readN(r io.Reader, n int) ([]byte, error) {
	const chunk = 16 << 20
	if n <= chunk {
		buf := make([]byte, n)
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	var buf bytes.Buffer
	buf.Grow(chunk)
	got, err := io.CopyN(&buf, r, int64(n))
	if err != nil {
		if err == io.EOF && got < int64(n) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf.Bytes(), nil
}

// noEOF turns a bare io.EOF (nothing read) into io.ErrUnexpectedEOF: inside
// a file, running out of bytes is always a truncation.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadFile reads the .npy file at path. Errors name the file.
func ReadFile(path string) (*Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a, err := Read(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// Write encodes a as a .npy stream: version 1.0 when the header fits in
// 65535 bytes, 2.0 otherwise; the data starts at a multiple of 64 bytes.
func Write(w io.Writer, a *Array) error {
	if a == nil {
		return errors.New("npy: Write: nil array")
	}
	if a.DType.Size() == 0 {
		return fmt.Errorf("npy: Write: dtype %q, want one of <f4, <f8, <i8, <i4, |u1", a.DType)
	}
	n, err := checkShape(a.Shape, a.DType.Size())
	if err != nil {
		return fmt.Errorf("npy: Write: %w", err)
	}
	if len(a.data) != n*a.DType.Size() {
		return fmt.Errorf("npy: Write: shape %v needs %d bytes of %s, array holds %d", a.Shape, n*a.DType.Size(), a.DType, len(a.data))
	}
	if _, err := w.Write(encodeHeader(a.DType, a.Shape)); err != nil {
		return fmt.Errorf("npy: write header: %w", err)
	}
	if _, err := w.Write(a.data); err != nil {
		return fmt.Errorf("npy: write data: %w", err)
	}
	return nil
}

// WriteFloat32 writes data with the given shape as a float32 .npy stream.
func WriteFloat32(w io.Writer, shape []int, data []float32) error {
	a, err := NewFloat32(shape, data)
	if err != nil {
		return err
	}
	return Write(w, a)
}

// WriteFile writes a to path, creating or truncating it.
func WriteFile(path string, a *Array) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := Write(bw, a); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// encodeHeader returns magic, version, length and the padded dict literal.
func encodeHeader(dt DType, shape []int) []byte {
	var d bytes.Buffer
	fmt.Fprintf(&d, "{'descr': '%s', 'fortran_order': False, 'shape': (", dt)
	for i, s := range shape {
		if i > 0 {
			d.WriteString(", ")
		}
		d.WriteString(strconv.Itoa(s))
	}
	if len(shape) == 1 {
		d.WriteByte(',')
	}
	d.WriteString("), }")
	// Pad with spaces so that prefix + dict + '\n' is a multiple of 64.
	prefix := 10 // magic(6) + version(2) + uint16 length
	if d.Len()+1+prefix > math.MaxUint16 {
		prefix = 12
	}
	total := prefix + d.Len() + 1
	pad := (64 - total%64) % 64
	d.Write(bytes.Repeat([]byte{' '}, pad))
	d.WriteByte('\n')

	out := make([]byte, 0, prefix+d.Len())
	out = append(out, magic...)
	if prefix == 10 {
		out = append(out, 1, 0)
		out = binary.LittleEndian.AppendUint16(out, uint16(d.Len()))
	} else {
		out = append(out, 2, 0)
		out = binary.LittleEndian.AppendUint32(out, uint32(d.Len()))
	}
	return append(out, d.Bytes()...)
}
