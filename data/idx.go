package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// MaxIDXBytes bounds the payload an idx header may declare (1 GiB). The
// payload is read incrementally, so a header that lies about its size costs
// no more memory than the bytes actually present.
const MaxIDXBytes = 1 << 30

// ErrIDX reports a malformed idx file.
var ErrIDX = errors.New("data: malformed idx file")

// IDX is a decoded idx file (the MNIST format, LeCun et al.): a magic number
// 0x00 0x00 <type> <ndims>, ndims big-endian uint32 sizes, then the values
// in row-major order. Only the unsigned byte type (0x08) is supported.
type IDX struct {
	Dims []int  // sizes, outermost first, e.g. (N, 28, 28) for idx3
	Data []byte // product(Dims) values
}

// DecodeIDX reads an idx file of unsigned bytes from r, transparently
// un-gzipping it when it starts with the gzip magic 1f 8b. It rejects bad
// magic, types other than ubyte, more than 4 dims, zero sizes, payloads over
// MaxIDXBytes, short payloads and trailing bytes.
func DecodeIDX(r io.Reader) (*IDX, error) {
	br := bufio.NewReader(r)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrIDX, err)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrIDX, err)
	}
	if hdr[0] != 0 || hdr[1] != 0 {
		return nil, fmt.Errorf("%w: magic % x: want 00 00 <type> <ndims>", ErrIDX, hdr)
	}
	if hdr[2] != 0x08 {
		return nil, fmt.Errorf("%w: value type 0x%02x: only 0x08 (unsigned byte) is supported", ErrIDX, hdr[2])
	}
	nd := int(hdr[3])
	if nd < 1 || nd > 4 {
		return nil, fmt.Errorf("%w: %d dimensions: allowed 1..4", ErrIDX, nd)
	}
	dims := make([]int, nd)
	total := int64(1)
	for i := range dims {
		var b [4]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, fmt.Errorf("%w: size of dim %d: %v", ErrIDX, i, err)
		}
		v := int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3])
		if v == 0 {
			return nil, fmt.Errorf("%w: dim %d has size 0", ErrIDX, i)
		}
		total *= v // at most (2^32)^4 would overflow, so check each step
		if total > MaxIDXBytes {
			return nil, fmt.Errorf("%w: payload of more than %d bytes (MaxIDXBytes)", ErrIDX, int64(MaxIDXBytes))
		}
		dims[i] = int(v)
	}
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, br, total)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: have %d of %d bytes: %v", ErrIDX, n, total, err)
	}
	if _, err := br.ReadByte(); err == nil {
		return nil, fmt.Errorf("%w: trailing bytes after %d-byte payload", ErrIDX, total)
	} else if err != io.EOF {
		return nil, fmt.Errorf("%w: %v", ErrIDX, err)
	}
	return &IDX{Dims: dims, Data: buf.Bytes()}, nil
}

// ReadIDXFile is DecodeIDX on a file.
func ReadIDXFile(path string) (*IDX, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	x, err := DecodeIDX(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return x, nil
}

// Split selects the training or the test part of a dataset.
type Split string

const (
	// Train is the training split (idx files named train-*).
	Train Split = "train"
	// Test is the test split (idx files named t10k-* or test-*).
	Test Split = "test"
)

// ParseSplit parses "train" or "test".
func ParseSplit(s string) (Split, error) {
	switch Split(s) {
	case Train, Test:
		return Split(s), nil
	}
	return "", fmt.Errorf("data: split %q: allowed train, test", s)
}

// idxNames lists the file names tried for a split, kind "images" or "labels".
func idxNames(split Split, kind string) []string {
	prefixes := []string{"train"}
	if split == Test {
		prefixes = []string{"t10k", "test"}
	}
	nd := "idx3"
	if kind == "labels" {
		nd = "idx1"
	}
	var names []string
	for _, p := range prefixes {
		for _, sep := range []string{"-", "."} {
			base := p + "-" + kind + sep + nd + "-ubyte"
			names = append(names, base+".gz", base)
		}
	}
	return names
}

// FindIDX returns the paths of the images and labels idx files of split in
// dir, trying train-images-idx3-ubyte[.gz] / t10k-… / test-… and the
// "images.idx3-ubyte" spelling. labels is "" when there is no labels file.
func FindIDX(dir string, split Split) (images, labels string, err error) {
	if _, err := ParseSplit(string(split)); err != nil {
		return "", "", err
	}
	find := func(kind string) string {
		for _, n := range idxNames(split, kind) {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p
			}
		}
		return ""
	}
	images = find("images")
	if images == "" {
		return "", "", fmt.Errorf("data: no %s images idx file in %s (looked for %v)", split, dir, idxNames(split, "images"))
	}
	return images, find("labels"), nil
}

// LoadIDX loads an images idx file ((N, H, W) grayscale or (N, C, H, W)
// with C = 1 or 3) and an optional labels idx file (N) (labelsPath "" for
// none) as a dataset. numClasses 0 means one more than the largest label;
// names may be nil. size and resize are as in NewImages.
func LoadIDX(imagesPath, labelsPath string, numClasses int, names []string, size int, resize Resize) (*Images, error) {
	im, err := ReadIDXFile(imagesPath)
	if err != nil {
		return nil, err
	}
	var n, c, h, w int
	switch len(im.Dims) {
	case 3:
		n, c, h, w = im.Dims[0], 1, im.Dims[1], im.Dims[2]
	case 4:
		n, c, h, w = im.Dims[0], im.Dims[1], im.Dims[2], im.Dims[3]
	default:
		return nil, fmt.Errorf("data: %s has %d dims %v: want (N, H, W) or (N, C, H, W)", imagesPath, len(im.Dims), im.Dims)
	}
	var labels []uint8
	if labelsPath != "" {
		lb, err := ReadIDXFile(labelsPath)
		if err != nil {
			return nil, err
		}
		if len(lb.Dims) != 1 || lb.Dims[0] != n {
			return nil, fmt.Errorf("data: %s has dims %v: want (%d) to match %s", labelsPath, lb.Dims, n, imagesPath)
		}
		labels = lb.Data
		if numClasses == 0 {
			for _, l := range labels {
				numClasses = max(numClasses, int(l)+1)
			}
		}
	}
	d, err := NewImages(im.Data, n, c, h, w, labels, numClasses, names, size, resize)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", imagesPath, err)
	}
	return d, nil
}

// LoadIDXDir loads split from the idx files in dir (see FindIDX).
func LoadIDXDir(dir string, split Split, numClasses int, names []string, size int, resize Resize) (*Images, error) {
	images, labels, err := FindIDX(dir, split)
	if err != nil {
		return nil, err
	}
	return LoadIDX(images, labels, numClasses, names, size, resize)
}
