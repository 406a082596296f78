package pt

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"

	"github.com/ddpm-go/ddpm/weights"
	"github.com/nlpodyssey/gopickle/types"
)

// MaxPickleLen is the largest data.pkl (or legacy main pickle) Open
// accepts: 64 MiB, some 500,000 tensors' worth.
const MaxPickleLen = 64 << 20

// TensorInfo describes one tensor of a checkpoint without its data.
type TensorInfo struct {
	// Name is the state dict key, e.g. "input_blocks.0.0.weight".
	Name string
	// DType is the storage's element type in weights.Tensor's spelling:
	// F32, F16, BF16, F64 (the float types), I64, I32, I16, I8, U8, BOOL.
	DType string
	// Shape is the tensor's size, e.g. (out, in, kh, kw) for a convolution
	// weight; empty for a scalar.
	Shape []int
	// Stride and Offset place the tensor in its storage, in elements.
	Stride []int64
	Offset int64
	// Storage is the key of the storage the tensor views (several tensors
	// may share one).
	Storage string
}

// NumElements returns product(Shape), 1 for a scalar.
func (ti TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range ti.Shape {
		n *= int64(d)
	}
	return n
}

// IsFloat reports whether the tensor has a floating-point type, the ones
// ReadAll returns by default.
func (ti TensorInfo) IsFloat() bool {
	switch ti.DType {
	case "F32", "F16", "BF16", "F64":
		return true
	}
	return false
}

// Option configures Open, Read and ReadFrom.
type Option func(*config)

type config struct {
	maxBytes int64
	ints     bool
}

// MaxBytes caps the tensor data, in float32 bytes, that ReadAll returns and
// the compressed storage bytes Open accepts. The default is four times the
// file's size: what a file of 1-byte storages widened to float32 needs.
// Raise it for checkpoints in which many tensors view one storage.
func MaxBytes(n int64) Option { return func(c *config) { c.maxBytes = n } }

// IncludeIntegers makes ReadAll also return the integer and bool tensors
// (I64, I32, I16, I8, U8, BOOL), converted to float32 (exact up to 2^24 in
// magnitude). By default they are left out: in a model's state dict they
// are counters such as BatchNorm's num_batches_tracked or index buffers,
// not weights. File.Tensors lists them either way.
func IncludeIntegers() Option { return func(c *config) { c.ints = true } }

// File is an opened checkpoint: its index, with tensor data read on demand.
// It reads from the io.ReaderAt given to Open, which must stay valid.
type File struct {
	// Tensors lists the state dict's tensors in the order the pickle holds
	// them (the order of model.state_dict()). They are copies: changing
	// them changes nothing that File reads.
	Tensors []TensorInfo
	// Skipped lists the entries that are not tensors.
	Skipped []Skipped
	// Legacy is true for the pre-zip format (PyTorch < 1.6, or
	// _use_new_zipfile_serialization=False).
	Legacy bool

	r        io.ReaderAt
	size     int64
	cfg      config
	order    binary.ByteOrder
	storages map[string]*storage
	refs     []*tensorRef
	names    []string
	byName   map[string]int
	closer   io.Closer
}

// storage locates one storage's bytes in the file.
type storage struct {
	ref *storageRef
	// off is the file offset of element 0 when the bytes are stored as
	// is; zf is set instead for a compressed zip entry.
	off int64
	zf  *zip.File
}

// Read reads the PyTorch checkpoint at path (torch.save of a state dict)
// and returns its floating-point tensors as float32, keyed by name; see
// IncludeIntegers for the others. Errors name the file.
func Read(path string, opts ...Option) (map[string]weights.Tensor, error) {
	f, err := OpenFile(path, opts...)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := f.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return m, nil
}

// ReadFrom is Read for a checkpoint held in r, size bytes long.
func ReadFrom(r io.ReaderAt, size int64, opts ...Option) (map[string]weights.Tensor, error) {
	f, err := Open(r, size, opts...)
	if err != nil {
		return nil, err
	}
	return f.ReadAll()
}

// OpenFile opens the checkpoint at path; Close releases it.
func OpenFile(path string, opts ...Option) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	f, err := Open(fh, st.Size(), opts...)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	f.closer = fh
	return f, nil
}

// Close closes the file OpenFile opened; it does nothing for Open's.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer = nil
	return err
}

// Open reads the index of the checkpoint in r (size bytes): the pickle and
// the storage table, validated, but no tensor data.
func Open(r io.ReaderAt, size int64, opts ...Option) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("pt: negative size %d", size)
	}
	f := &File{r: r, size: size, order: binary.LittleEndian}
	for _, o := range opts {
		o(&f.cfg)
	}
	if f.cfg.maxBytes <= 0 {
		f.cfg.maxBytes = 4 * size
	}
	var head [512]byte
	n, err := r.ReadAt(head[:min(int64(len(head)), size)], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	h := head[:n]
	table := &storageTable{}
	var root any
	switch {
	case bytes.HasPrefix(h, []byte("PK\x03\x04")) || bytes.HasPrefix(h, []byte("PK\x05\x06")):
		root, err = f.openZip(table)
	case len(h) >= 2 && h[0] == 0x80 && h[1] <= 5:
		f.Legacy = true
		table.legacy = true
		root, err = f.openLegacy(table)
	case len(h) >= 262 && string(h[257:262]) == "ustar":
		return nil, fmt.Errorf("%w: a tar archive: the checkpoint format of PyTorch before 0.4 is not supported", ErrFormat)
	case len(h) >= 9 && h[8] == '{':
		return nil, fmt.Errorf("%w: this looks like a safetensors file; read it with weights.ReadFile", ErrFormat)
	default:
		return nil, fmt.Errorf("%w: neither a zip archive (torch.save) nor a legacy pickle checkpoint", ErrFormat)
	}
	if err != nil {
		return nil, err
	}
	tensors, skipped, err := collect(root)
	if err != nil {
		return nil, err
	}
	f.Skipped = skipped
	f.byName = make(map[string]int, len(tensors))
	for i, nt := range tensors {
		f.byName[nt.name] = i
		f.refs = append(f.refs, nt.t)
		f.names = append(f.names, nt.name)
		f.Tensors = append(f.Tensors, TensorInfo{
			Name: nt.name, DType: nt.t.st.dt.name,
			Shape:  append([]int{}, nt.t.shape...),
			Stride: append([]int64{}, nt.t.stride...),
			Offset: nt.t.offset, Storage: nt.t.st.key,
		})
	}
	return f, nil
}

// openZip reads the zip format torch.save writes since PyTorch 1.6:
// <name>/data.pkl (the pickle), <name>/data/<key> (one raw storage each,
// stored uncompressed), <name>/version and, since 2.1, <name>/byteorder.
func (f *File) openZip(table *storageTable) (any, error) {
	zr, err := zip.NewReader(f.r, f.size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fmt.Errorf("%w: zip archive: %w", ErrFormat, err)
	}
	entries := make(map[string]*zip.File, len(zr.File))
	var pkl *zip.File
	var prefix string
	for _, zf := range zr.File {
		if _, dup := entries[zf.Name]; dup {
			return nil, fmt.Errorf("%w: zip archive has two entries named %q", ErrFormat, zf.Name)
		}
		entries[zf.Name] = zf
		dir, base, ok := strings.Cut(zf.Name, "/")
		if ok && base == "data.pkl" {
			if pkl != nil {
				return nil, fmt.Errorf("%w: zip archive has two data.pkl entries (%q and %q)", ErrFormat, pkl.Name, zf.Name)
			}
			pkl, prefix = zf, dir+"/"
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("%w: zip archive has no <name>/data.pkl entry: not a torch.save checkpoint", ErrFormat)
	}
	if _, ok := entries[prefix+"constants.pkl"]; ok {
		return nil, fmt.Errorf("%w: a TorchScript archive (torch.jit.save); save model.state_dict() with torch.save instead", ErrFormat)
	}
	if bo, ok := entries[prefix+"byteorder"]; ok {
		b, err := readEntry(bo, 16)
		if err != nil {
			return nil, fmt.Errorf("%w: byteorder record: %w", ErrFormat, err)
		}
		switch string(b) {
		case "little":
		case "big":
			f.order = binary.BigEndian
		default:
			return nil, fmt.Errorf("%w: byteorder record says %q, want little or big", ErrFormat, b)
		}
	}
	data, err := readEntry(pkl, MaxPickleLen)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFormat, pkl.Name, err)
	}
	if _, err := scanPickle(bytes.NewReader(data), int64(len(data))); err != nil {
		return nil, err
	}
	root, err := unpickle(data, table.load)
	if err != nil {
		return nil, err
	}
	f.storages = make(map[string]*storage, len(table.order))
	var compressed int64
	for _, ref := range table.order {
		name := prefix + "data/" + ref.key
		zf, ok := entries[name]
		if !ok {
			return nil, fmt.Errorf("%w: storage %q has no zip entry %s", ErrFormat, ref.key, name)
		}
		nb := ref.numel * int64(ref.dt.size) // checked against overflow in load
		if zf.UncompressedSize64 != uint64(nb) {
			return nil, fmt.Errorf("%w: storage %q holds %d %s elements (%d bytes) but its zip entry has %d bytes", ErrFormat, ref.key, ref.numel, ref.dt.name, nb, zf.UncompressedSize64)
		}
		st := &storage{ref: ref}
		if zf.Method == zip.Store {
			off, err := zf.DataOffset()
			if err != nil {
				return nil, fmt.Errorf("%w: storage %q: %w", ErrFormat, ref.key, err)
			}
			if zf.CompressedSize64 != zf.UncompressedSize64 || off < 0 || off > f.size || uint64(f.size-off) < uint64(nb) {
				return nil, fmt.Errorf("%w: storage %q: zip entry of %d bytes at offset %d runs past the end of the %d-byte file (truncated?)", ErrFormat, ref.key, nb, off, f.size)
			}
			st.off = off
		} else {
			compressed += nb
			if compressed > f.cfg.maxBytes {
				return nil, fmt.Errorf("%w: compressed storages expand to more than the %d-byte limit (see MaxBytes)", ErrFormat, f.cfg.maxBytes)
			}
			st.zf = zf
		}
		f.storages[ref.key] = st
	}
	return root, nil
}

// readEntry reads a whole zip entry of at most limit bytes, checking its
// CRC. It allocates as the data arrive, not as the header declares.
func readEntry(zf *zip.File, limit int64) ([]byte, error) {
	if zf.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("entry of %d bytes exceeds the limit of %d", zf.UncompressedSize64, limit)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.Grow(int(min(zf.UncompressedSize64, zf.CompressedSize64, 1<<20)))
	// Reading to EOF makes archive/zip check the size and the CRC.
	if _, err := io.Copy(&buf, io.LimitReader(rc, int64(zf.UncompressedSize64)+1)); err != nil {
		return nil, truncErr(err)
	}
	if uint64(buf.Len()) != zf.UncompressedSize64 {
		return nil, fmt.Errorf("entry holds %d bytes, its header says %d", buf.Len(), zf.UncompressedSize64)
	}
	return buf.Bytes(), nil
}

// legacyMagic is the number torch.save's legacy format starts with.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

// openLegacy reads the pre-zip format: five pickles (magic number,
// protocol version 1001, system info, the object, the sorted storage keys)
// followed by each storage as an 8-byte little-endian element count and
// the raw elements.
func (f *File) openLegacy(table *storageTable) (any, error) {
	pos := int64(0)
	next := func(what string, pl func(any) (any, error)) (any, error) {
		limit := min(f.size-pos, MaxPickleLen)
		n, err := scanPickle(io.NewSectionReader(f.r, pos, limit), limit)
		if err != nil {
			return nil, fmt.Errorf("legacy checkpoint %s: %w", what, err)
		}
		b := make([]byte, n)
		if _, err := f.r.ReadAt(b, pos); err != nil {
			return nil, truncErr(err)
		}
		pos += n
		v, err := unpickle(b, pl)
		if err != nil {
			return nil, fmt.Errorf("legacy checkpoint %s: %w", what, err)
		}
		return v, nil
	}
	magic, err := next("magic number", nil)
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, fmt.Errorf("%w: a pickle, but not one torch.save wrote (no magic number)", ErrFormat)
	}
	proto, err := next("protocol version", nil)
	if err != nil {
		return nil, err
	}
	if proto != 1001 {
		return nil, fmt.Errorf("%w: legacy checkpoint protocol version %v, want 1001", ErrFormat, describe(proto))
	}
	info, err := next("system info", nil)
	if err != nil {
		return nil, err
	}
	d, ok := info.(*types.Dict)
	if !ok {
		return nil, fmt.Errorf("%w: legacy checkpoint system info is a %s, not a dict", ErrFormat, pyType(info))
	}
	if le, ok := d.Get("little_endian"); ok && le == false {
		f.order = binary.BigEndian
	}
	root, err := next("object", table.load)
	if err != nil {
		return nil, err
	}
	keysV, err := next("storage keys", nil)
	if err != nil {
		return nil, err
	}
	keys, ok := keysV.(*types.List)
	if !ok {
		return nil, fmt.Errorf("%w: legacy checkpoint storage keys are a %s, not a list", ErrFormat, pyType(keysV))
	}
	f.storages = make(map[string]*storage, len(table.order))
	for _, kv := range *keys {
		key, ok := kv.(string)
		if !ok {
			return nil, fmt.Errorf("%w: legacy checkpoint storage key is a %s", ErrFormat, pyType(kv))
		}
		ref, ok := table.byKey[key]
		if !ok {
			return nil, fmt.Errorf("%w: legacy checkpoint lists storage %q, which no tensor uses", ErrFormat, key)
		}
		if _, dup := f.storages[key]; dup {
			return nil, fmt.Errorf("%w: legacy checkpoint lists storage %q twice", ErrFormat, key)
		}
		var nb [8]byte
		if pos > f.size-8 {
			return nil, fmt.Errorf("%w: legacy checkpoint ends before storage %q (truncated)", ErrFormat, key)
		}
		if _, err := f.r.ReadAt(nb[:], pos); err != nil {
			return nil, truncErr(err)
		}
		numel := int64(f.order.Uint64(nb[:]))
		if numel != ref.numel {
			return nil, fmt.Errorf("%w: storage %q has %d elements in the file, %d in the pickle", ErrFormat, key, numel, ref.numel)
		}
		pos += 8
		bytes := numel * int64(ref.dt.size)
		if bytes > f.size-pos {
			return nil, fmt.Errorf("%w: storage %q of %d bytes runs past the end of the file (truncated)", ErrFormat, key, bytes)
		}
		f.storages[key] = &storage{ref: ref, off: pos}
		pos += bytes
	}
	for _, ref := range table.order {
		if _, ok := f.storages[ref.key]; !ok {
			return nil, fmt.Errorf("%w: legacy checkpoint has no data for storage %q", ErrFormat, ref.key)
		}
	}
	return root, nil
}

// Info returns the named tensor's description.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// ReadTensor reads the named tensor (of any type) as float32.
func (f *File) ReadTensor(name string) (weights.Tensor, error) {
	i, ok := f.byName[name]
	if !ok {
		return weights.Tensor{}, fmt.Errorf("no tensor named %q", name)
	}
	var scratch []byte
	return f.read(i, &scratch)
}

// ReadAll reads every floating-point tensor (and with IncludeIntegers the
// others) as float32, after checking that their total fits the MaxBytes
// limit.
func (f *File) ReadAll() (map[string]weights.Tensor, error) {
	var total int64
	for _, ref := range f.refs {
		if ref.st.dt.float || f.cfg.ints {
			total += 4 * ref.numel()
			if total > f.cfg.maxBytes {
				return nil, fmt.Errorf("%w: the tensors need more than %d bytes as float32, the limit (see MaxBytes)", ErrFormat, f.cfg.maxBytes)
			}
		}
	}
	out := make(map[string]weights.Tensor, len(f.Tensors))
	var scratch []byte
	for i, ref := range f.refs {
		if !ref.st.dt.float && !f.cfg.ints {
			continue
		}
		t, err := f.read(i, &scratch)
		if err != nil {
			return nil, err
		}
		out[f.names[i]] = t
	}
	return out, nil
}

// read materialises tensor i: it reads the storage span the view touches
// and gathers the elements in row-major order.
func (f *File) read(i int, scratch *[]byte) (weights.Tensor, error) {
	ref := f.refs[i]
	st := f.storages[ref.st.key]
	n := ref.numel()
	t := weights.Tensor{DType: ref.st.dt.name, Shape: append([]int{}, ref.shape...), Data: make([]float32, n)}
	if n == 0 {
		return t, nil
	}
	last, _ := lastElement(ref.offset, ref.shape, ref.stride) // validated when unpickled
	es := int64(ref.st.dt.size)
	nb := (last - ref.offset + 1) * es
	if int64(cap(*scratch)) < nb {
		*scratch = make([]byte, nb)
	}
	buf := (*scratch)[:nb]
	if err := f.readStorage(st, ref.offset*es, buf); err != nil {
		return weights.Tensor{}, fmt.Errorf("read tensor %q: %w", f.names[i], err)
	}
	gather(t.Data, buf, ref.shape, ref.stride, ref.st.dt.name, f.order)
	return t, nil
}

// readStorage reads len(buf) bytes of st from byte off.
func (f *File) readStorage(st *storage, off int64, buf []byte) error {
	if st.zf == nil {
		_, err := f.r.ReadAt(buf, st.off+off)
		return truncErr(err)
	}
	rc, err := st.zf.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		return truncErr(err)
	}
	_, err = io.ReadFull(rc, buf)
	return truncErr(err)
}

var errTruncated = fmt.Errorf("%w: unexpected end of data (truncated file?)", ErrFormat)

// truncErr maps the end-of-file errors of a read that should have been
// complete to errTruncated; nil stays nil.
func truncErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTruncated
	}
	return err
}
