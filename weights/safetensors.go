package weights

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"unicode/utf8"
)

// ErrFormat is wrapped by every error about a malformed or unsupported
// safetensors file.
var ErrFormat = errors.New("invalid safetensors")

// MaxHeaderLen is the largest JSON header Read accepts (100 MiB, the limit
// the reference implementation uses).
const MaxHeaderLen = 100 << 20

// maxDims bounds the rank of a tensor.
const maxDims = 32

// metadataKey is the reserved header entry holding string metadata.
const metadataKey = "__metadata__"

// Tensor is a float32 tensor in C (row-major) order.
type Tensor struct {
	// DType is the element type the tensor had in the file it was read from
	// ("F32", "F16", "BF16", ...); Data is always float32. Write accepts only
	// "" or "F32" here.
	DType string
	// Shape holds the extent of each dimension, e.g. (out, in, kh, kw) for a
	// convolution weight; an empty Shape is a scalar.
	Shape []int
	// Data holds product(Shape) elements.
	Data []float32
}

// NumElements returns product(Shape), 1 for a scalar.
func (t Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is the content of a safetensors file.
type File struct {
	// Metadata is the "__metadata__" object; nil or empty writes none.
	Metadata map[string]string
	// Tensors maps names to tensors.
	Tensors map[string]Tensor
}

// TensorInfo describes one tensor of a safetensors header without its data.
type TensorInfo struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
	// Begin and End are byte offsets into the data buffer, which starts at
	// Header.DataOffset in the file.
	Begin int64 `json:"begin"`
	End   int64 `json:"end"`
}

// NumElements returns product(Shape), 1 for a scalar.
func (ti TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range ti.Shape {
		n *= int64(d)
	}
	return n
}

// Header is a validated safetensors header.
type Header struct {
	// Metadata is the "__metadata__" object, nil when the file has none.
	Metadata map[string]string
	// Tensors are sorted by Begin, which is file order.
	Tensors []TensorInfo
	// DataOffset is where the data buffer starts in the file: 8 + header length.
	DataOffset int64
}

// rawInfo is one tensor entry as JSON spells it.
type rawInfo struct {
	DType   *string `json:"dtype"`
	Shape   []int64 `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

// ReadHeader reads and validates the header of the safetensors data in r,
// which holds size bytes. It checks every tensor's dtype, shape and offsets,
// and that the tensors tile the data buffer exactly, but reads no tensor
// data.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, fmt.Errorf("%w: file is %d bytes, shorter than the 8-byte header length", ErrFormat, size)
	}
	var lb [8]byte
	if _, err := r.ReadAt(lb[:], 0); err != nil {
		return nil, fmt.Errorf("read header length: %w", eofIsTruncation(err))
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > MaxHeaderLen {
		return nil, fmt.Errorf("%w: header length %d exceeds the limit of %d bytes", ErrFormat, n, MaxHeaderLen)
	}
	if n > uint64(size-8) {
		return nil, fmt.Errorf("%w: header length %d is larger than the %d bytes after the length field (truncated file?)", ErrFormat, n, size-8)
	}
	if n < 2 {
		return nil, fmt.Errorf("%w: header length %d is too short for a JSON object", ErrFormat, n)
	}
	hb := make([]byte, n)
	if _, err := r.ReadAt(hb, 8); err != nil {
		return nil, fmt.Errorf("read %d-byte header: %w", n, eofIsTruncation(err))
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, err
	}
	h.DataOffset = 8 + int64(n)
	if err := h.validate(size - h.DataOffset); err != nil {
		return nil, err
	}
	return h, nil
}

// parseHeader decodes the JSON header, rejecting duplicate names.
func parseHeader(hb []byte) (*Header, error) {
	if !utf8.Valid(hb) {
		return nil, fmt.Errorf("%w: header is not valid UTF-8", ErrFormat)
	}
	if hb[0] != '{' {
		return nil, fmt.Errorf("%w: header does not start with '{'", ErrFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(hb))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%w: header JSON: %v", ErrFormat, jsonErr(err))
	}
	h := &Header{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: header JSON: %v", ErrFormat, jsonErr(err))
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%w: header JSON: key %v is not a string", ErrFormat, tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: header has duplicate entry %q", ErrFormat, name)
		}
		seen[name] = true
		if name == metadataKey {
			var m map[string]string
			if err := dec.Decode(&m); err != nil {
				return nil, fmt.Errorf("%w: %s must be an object of string values: %v", ErrFormat, metadataKey, jsonErr(err))
			}
			h.Metadata = m
			continue
		}
		if name == "" {
			return nil, fmt.Errorf("%w: header has a tensor with an empty name", ErrFormat)
		}
		var ri rawInfo
		if err := dec.Decode(&ri); err != nil {
			return nil, fmt.Errorf("%w: header JSON for tensor %q: %v", ErrFormat, name, jsonErr(err))
		}
		ti, err := ri.check(name)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, ti)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("%w: header JSON: %v", ErrFormat, jsonErr(err))
	}
	rest := hb[dec.InputOffset():]
	if len(bytes.Trim(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("%w: %d bytes of trailing garbage after the header JSON", ErrFormat, len(rest))
	}
	return h, nil
}

// check validates one entry's dtype, shape and offsets on their own.
func (ri rawInfo) check(name string) (TensorInfo, error) {
	ti := TensorInfo{Name: name}
	if ri.DType == nil {
		return ti, fmt.Errorf("%w: tensor %q has no dtype", ErrFormat, name)
	}
	ti.DType = *ri.DType
	esize, ok := dtypeSize(ti.DType)
	if !ok {
		return ti, fmt.Errorf("%w: tensor %q has dtype %q, supported: %s", ErrFormat, name, ti.DType, supportedDTypes)
	}
	if ri.Shape == nil {
		return ti, fmt.Errorf("%w: tensor %q has no shape", ErrFormat, name)
	}
	if len(ri.Shape) > maxDims {
		return ti, fmt.Errorf("%w: tensor %q has %d dimensions, at most %d allowed", ErrFormat, name, len(ri.Shape), maxDims)
	}
	if len(ri.Offsets) != 2 {
		return ti, fmt.Errorf("%w: tensor %q: data_offsets has %d values, want [begin, end]", ErrFormat, name, len(ri.Offsets))
	}
	ti.Begin, ti.End = ri.Offsets[0], ri.Offsets[1]
	if ti.Begin < 0 || ti.End < ti.Begin {
		return ti, fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] must satisfy 0 <= begin <= end", ErrFormat, name, ti.Begin, ti.End)
	}
	// bytes = product(shape) * element size, checked against overflow.
	nb := int64(esize)
	ti.Shape = make([]int, len(ri.Shape))
	for i, d := range ri.Shape {
		if d < 0 || d > math.MaxInt32 {
			return ti, fmt.Errorf("%w: tensor %q: shape[%d] = %d, want 0..%d", ErrFormat, name, i, d, math.MaxInt32)
		}
		ti.Shape[i] = int(d)
		if d != 0 && nb > math.MaxInt64/d {
			return ti, fmt.Errorf("%w: tensor %q: shape %v is too large", ErrFormat, name, ri.Shape)
		}
		nb *= d
	}
	if ti.End-ti.Begin != nb {
		return ti, fmt.Errorf("%w: tensor %q: shape %v of %s needs %d bytes, data_offsets [%d, %d] span %d", ErrFormat, name, ti.Shape, ti.DType, nb, ti.Begin, ti.End, ti.End-ti.Begin)
	}
	return ti, nil
}

// validate checks that the tensors tile [0, bufLen) exactly: sorted by
// offset, each starts where the previous ended, the last ends at bufLen.
func (h *Header) validate(bufLen int64) error {
	sort.Slice(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	var pos int64
	for i, t := range h.Tensors {
		switch {
		case t.End > bufLen:
			return fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] run past the %d-byte data buffer (truncated file?)", ErrFormat, t.Name, t.Begin, t.End, bufLen)
		case t.Begin < pos:
			return fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] overlap tensor %q ending at %d", ErrFormat, t.Name, t.Begin, t.End, h.Tensors[i-1].Name, pos)
		case t.Begin > pos:
			return fmt.Errorf("%w: bytes [%d, %d) of the data buffer belong to no tensor (next is %q)", ErrFormat, pos, t.Begin, t.Name)
		}
		pos = t.End
	}
	if pos != bufLen {
		return fmt.Errorf("%w: tensors cover %d bytes but the data buffer holds %d (trailing bytes after the last tensor)", ErrFormat, pos, bufLen)
	}
	return nil
}

// jsonErr makes a decoder's EOF say that the JSON ended early.
func jsonErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("unexpected end of JSON")
	}
	return err
}

// eofIsTruncation maps io.EOF to io.ErrUnexpectedEOF: a short read inside a
// file means the file was cut.
func eofIsTruncation(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: file is truncated: %w", ErrFormat, io.ErrUnexpectedEOF)
	}
	return err
}

// Read reads the safetensors data in r (size bytes long) and converts every
// tensor to float32.
func Read(r io.ReaderAt, size int64) (*File, error) {
	return readSelected(r, size, nil)
}

// readSelected reads the tensors for which keep returns true (all when keep
// is nil).
func readSelected(r io.ReaderAt, size int64, keep func(string) bool) (*File, error) {
	h, err := ReadHeader(r, size)
	if err != nil {
		return nil, err
	}
	f := &File{Metadata: h.Metadata, Tensors: make(map[string]Tensor, len(h.Tensors))}
	if f.Metadata == nil {
		f.Metadata = map[string]string{}
	}
	var scratch []byte
	for _, ti := range h.Tensors {
		if keep != nil && !keep(ti.Name) {
			continue
		}
		nb := ti.End - ti.Begin
		if int64(cap(scratch)) < nb {
			scratch = make([]byte, nb)
		}
		buf := scratch[:nb]
		if _, err := r.ReadAt(buf, h.DataOffset+ti.Begin); err != nil {
			return nil, fmt.Errorf("read tensor %q: %w", ti.Name, eofIsTruncation(err))
		}
		t := Tensor{DType: ti.DType, Shape: ti.Shape, Data: make([]float32, ti.NumElements())}
		decode(t.Data, buf, ti.DType)
		f.Tensors[ti.Name] = t
	}
	return f, nil
}

// ReadFile reads the safetensors file at path. Errors name the file.
func ReadFile(path string) (*File, error) {
	return readFileSelected(path, nil)
}

func readFileSelected(path string, keep func(string) bool) (*File, error) {
	fh, size, err := openSized(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	f, err := readSelected(fh, size, keep)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return f, nil
}

// openSized opens path for reading and returns its size; the caller
// closes the file.
func openSized(path string) (*os.File, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, 0, err
	}
	return fh, st.Size(), nil
}

// ReadHeaderFile reads and validates the header of the safetensors file at
// path without reading tensor data.
func ReadHeaderFile(path string) (*Header, error) {
	fh, size, err := openSized(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	h, err := ReadHeader(fh, size)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return h, nil
}

// encodeHeader validates f and returns the padded header (length field
// included) and the tensor names in data order (sorted).
func encodeHeader(f *File) ([]byte, []string, error) {
	if f == nil {
		return nil, nil, errors.New("write safetensors: nil File")
	}
	names := make([]string, 0, len(f.Tensors))
	for name, t := range f.Tensors {
		if name == "" || name == metadataKey {
			return nil, nil, fmt.Errorf("write safetensors: tensor name %q is reserved or empty", name)
		}
		if t.DType != "" && t.DType != "F32" {
			return nil, nil, fmt.Errorf("write safetensors: tensor %q has DType %q; the writer writes F32 only (set DType to \"\" or \"F32\")", name, t.DType)
		}
		if len(t.Shape) > maxDims {
			return nil, nil, fmt.Errorf("write safetensors: tensor %q has %d dimensions, at most %d allowed", name, len(t.Shape), maxDims)
		}
		n := 1
		for i, d := range t.Shape {
			if d < 0 || d > math.MaxInt32 {
				return nil, nil, fmt.Errorf("write safetensors: tensor %q: shape[%d] = %d, want 0..%d", name, i, d, math.MaxInt32)
			}
			if d != 0 && n > math.MaxInt/4/d {
				return nil, nil, fmt.Errorf("write safetensors: tensor %q: shape %v is too large", name, t.Shape)
			}
			n *= d
		}
		if n != len(t.Data) {
			return nil, nil, fmt.Errorf("write safetensors: tensor %q: shape %v needs %d values, Data has %d", name, t.Shape, n, len(t.Data))
		}
		names = append(names, name)
	}
	sort.Strings(names)

	var b bytes.Buffer
	enc := func(v any) {
		var e bytes.Buffer
		je := json.NewEncoder(&e)
		je.SetEscapeHTML(false)
		_ = je.Encode(v) // strings and maps of strings always encode
		b.Write(bytes.TrimRight(e.Bytes(), "\n"))
	}
	b.WriteByte('{')
	first := true
	if len(f.Metadata) > 0 {
		b.WriteString(`"` + metadataKey + `":`)
		enc(f.Metadata) // encoding/json sorts map keys
		first = false
	}
	var off int64
	for _, name := range names {
		t := f.Tensors[name]
		if !first {
			b.WriteByte(',')
		}
		first = false
		enc(name)
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		end := off + 4*int64(len(t.Data))
		b.WriteString(`:{"dtype":"F32","shape":`)
		enc(shape)
		fmt.Fprintf(&b, `,"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	b.WriteByte('}')
	// Pad with spaces so the data buffer starts on an 8-byte boundary.
	for (8+b.Len())%8 != 0 {
		b.WriteByte(' ')
	}
	out := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+b.Len()), uint64(b.Len()))
	return append(out, b.Bytes()...), names, nil
}

// Write encodes f as safetensors: header entries and data in sorted name
// order (so equal Files give equal bytes), every tensor as F32, the header
// padded with spaces to a multiple of 8 bytes. f is validated before
// anything is written.
func Write(w io.Writer, f *File) error {
	hdr, names, err := encodeHeader(f)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(hdr); err != nil {
		return fmt.Errorf("write safetensors header: %w", err)
	}
	buf := make([]byte, 0, 64<<10)
	for _, name := range names {
		data := f.Tensors[name].Data
		for len(data) > 0 {
			k := min(len(data), cap(buf)/4)
			buf = buf[:0]
			for _, v := range data[:k] {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			}
			if _, err := bw.Write(buf); err != nil {
				return fmt.Errorf("write tensor %q: %w", name, err)
			}
			data = data[k:]
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write safetensors: %w", err)
	}
	return nil
}

// hasPrefix reports whether name starts with any of prefixes.
func hasPrefix(name string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
