package mnistclf

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
)

// The weights file format (little-endian):
//
//	magic   "DDPMCLF1" (8 bytes)
//	count   uint32, the number of tensors (8)
//	count × { size uint32; size × float32 } in the order of net.go
//	crc     uint32, CRC-32 (IEEE) of everything before it
//
// Sizes must match this package's architecture exactly, so a file is at most
// a few hundred KB and a corrupt header cannot cause a large allocation.
const magic = "DDPMCLF1"

// ErrWeights reports a weights file that is corrupt or for another
// architecture.
var ErrWeights = errors.New("mnistclf: bad weights file")

//go:embed clf.bin
var pretrained []byte

// Pretrained returns the classifier trained by TestTrainAndSave and
// committed as clf.bin (see README.md for its test accuracy).
func Pretrained() (*Classifier, error) {
	c, err := Load(bytes.NewReader(pretrained))
	if err != nil {
		return nil, fmt.Errorf("mnistclf: embedded clf.bin: %w", err)
	}
	return c, nil
}

// Save writes the parameters in the weights file format.
func (c *Classifier) Save(w io.Writer) error {
	buf := make([]byte, 0, 12+4*len(tensorSizes)+4*nParam+4)
	buf = append(buf, magic...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(tensorSizes)))
	off := 0
	for _, n := range tensorSizes {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(n))
		for _, v := range c.p[off : off+n] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		off += n
	}
	buf = binary.LittleEndian.AppendUint32(buf, crc32.ChecksumIEEE(buf))
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("mnistclf: save: %w", err)
	}
	return nil
}

// SaveFile writes the weights to path atomically (temporary file + rename).
func (c *Classifier) SaveFile(path string) error {
	var b bytes.Buffer
	if err := c.Save(&b); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-clf-*")
	if err != nil {
		return fmt.Errorf("mnistclf: save %s: %w", path, err)
	}
	_, err = f.Write(b.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("mnistclf: save %s: %w", path, err)
	}
	return nil
}

// Load reads a classifier in the weights file format. Corrupt data, a bad
// checksum, non-finite weights or another architecture give ErrWeights.
func Load(r io.Reader) (*Classifier, error) {
	want := 12 + 4*len(tensorSizes) + 4*nParam + 4
	buf, err := io.ReadAll(io.LimitReader(r, int64(want)+1))
	if err != nil {
		return nil, fmt.Errorf("mnistclf: load: %w", err)
	}
	if len(buf) != want {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrWeights, len(buf), want)
	}
	if string(buf[:8]) != magic {
		return nil, fmt.Errorf("%w: magic %q, want %q", ErrWeights, buf[:8], magic)
	}
	body, sum := buf[:want-4], binary.LittleEndian.Uint32(buf[want-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch (file corrupt)", ErrWeights)
	}
	if n := binary.LittleEndian.Uint32(buf[8:]); n != uint32(len(tensorSizes)) {
		return nil, fmt.Errorf("%w: %d tensors, want %d", ErrWeights, n, len(tensorSizes))
	}
	p := make([]float32, 0, nParam)
	pos := 12
	for k, n := range tensorSizes {
		if got := binary.LittleEndian.Uint32(buf[pos:]); got != uint32(n) {
			return nil, fmt.Errorf("%w: tensor %d has %d values, want %d", ErrWeights, k, got, n)
		}
		pos += 4
		for range n {
			v := math.Float32frombits(binary.LittleEndian.Uint32(buf[pos:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("%w: tensor %d holds %v", ErrWeights, k, v)
			}
			p = append(p, v)
			pos += 4
		}
	}
	return &Classifier{p: p}, nil
}

// LoadFile is Load on the file at path.
func LoadFile(path string) (*Classifier, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mnistclf: %w", err)
	}
	defer f.Close()
	c, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return c, nil
}
