package data

import (
	"fmt"
	"image"
	"slices"
	"strings"

	"github.com/ddpm-go/ddpm/img"
)

// Dataset is an indexed collection of images with optional class labels.
type Dataset interface {
	// Len is the number of examples.
	Len() int
	// Shape is the (C, H, W) shape of every example.
	Shape() (c, h, w int)
	// NumClasses is the number of classes, 0 for an unlabelled dataset.
	NumClasses() int
	// ClassNames names each class (len NumClasses), nil when unlabelled.
	ClassNames() []string
	// Example writes example i (0 <= i < Len) into dst (len C·H·W) as
	// float32 (C, H, W) in [-1, 1] and returns its label in
	// [0, NumClasses), or -1 when the dataset is unlabelled.
	Example(i int, dst []float32) (label int, err error)
}

// Resize says how an idx dataset (28×28 MNIST-like images) reaches the
// requested Size.
type Resize int

const (
	// ResizeNone keeps the native size; Size must be 0 or equal to it.
	ResizeNone Resize = iota
	// ResizePad centres the image on a Size×Size background of value −1
	// (MNIST 28 → 32 adds 2 px on each side). Size must be >= the native size.
	ResizePad
	// ResizeScale resizes (Catmull-Rom, see img.Fit) to Size×Size,
	// center-cropping when the aspect ratio differs. It runs on every
	// Example call (about 40 µs for MNIST 28 → 32 here), so ResizePad is
	// much cheaper when it fits.
	ResizeScale
)

// String returns "none", "pad" or "resize".
func (r Resize) String() string {
	switch r {
	case ResizeNone:
		return "none"
	case ResizePad:
		return "pad"
	case ResizeScale:
		return "resize"
	}
	return fmt.Sprintf("Resize(%d)", int(r))
}

// ParseResize parses "none", "pad" or "resize" (case-insensitive).
func ParseResize(s string) (Resize, error) {
	for _, r := range []Resize{ResizeNone, ResizePad, ResizeScale} {
		if strings.EqualFold(s, r.String()) {
			return r, nil
		}
	}
	return 0, fmt.Errorf("data: resize %q: allowed none, pad, resize", s)
}

// Images is an in-memory dataset of 8-bit images, converted to [-1, 1] and
// brought to the output size (Resize) on each Example call.
type Images struct {
	pix        []uint8 // (N, C, H0, W0)
	labels     []uint8 // len N, or nil
	n, c       int
	h0, w0     int // stored size
	h, w       int // output size
	resize     Resize
	numClasses int
	names      []string
}

// NewImages wraps pix, n images of shape (c, h0, w0) in row-major (N, C, H, W)
// byte order, with optional labels (len n, each < numClasses; nil for an
// unlabelled dataset) and class names (len numClasses, or nil for "0", "1",
// ...). size and resize choose the output size: size 0 with ResizeNone keeps
// h0×w0. pix and labels are not copied and must not be modified afterwards;
// names is copied.
func NewImages(pix []uint8, n, c, h0, w0 int, labels []uint8, numClasses int, names []string, size int, resize Resize) (*Images, error) {
	if n < 1 || c < 1 || h0 < 1 || w0 < 1 {
		return nil, fmt.Errorf("data: images shape (%d,%d,%d,%d): every size must be >= 1", n, c, h0, w0)
	}
	if c != 1 && c != 3 {
		return nil, fmt.Errorf("data: images with C=%d channels: allowed 1 or 3", c)
	}
	if len(pix) != n*c*h0*w0 {
		return nil, fmt.Errorf("data: images shape (%d,%d,%d,%d) needs %d bytes, have %d", n, c, h0, w0, n*c*h0*w0, len(pix))
	}
	d := &Images{pix: pix, n: n, c: c, h0: h0, w0: w0, h: h0, w: w0, resize: resize}
	if labels != nil {
		if len(labels) != n {
			return nil, fmt.Errorf("data: %d labels for %d images", len(labels), n)
		}
		if numClasses < 1 || numClasses > 256 {
			return nil, fmt.Errorf("data: numClasses=%d: allowed 1..256 for a labelled dataset", numClasses)
		}
		for i, l := range labels {
			if int(l) >= numClasses {
				return nil, fmt.Errorf("data: label %d of example %d: allowed 0..%d", l, i, numClasses-1)
			}
		}
		if names == nil {
			for k := range numClasses {
				names = append(names, fmt.Sprint(k))
			}
		}
		if len(names) != numClasses {
			return nil, fmt.Errorf("data: %d class names for %d classes", len(names), numClasses)
		}
		d.labels, d.numClasses, d.names = labels, numClasses, slices.Clone(names)
	}
	switch resize {
	case ResizeNone:
		if size != 0 && (size != h0 || size != w0) {
			return nil, fmt.Errorf("data: size=%d with resize=none: images are %dx%d; use resize=pad or resize=resize, or size 0", size, w0, h0)
		}
	case ResizePad:
		if size < max(h0, w0) || size > 4096 {
			return nil, fmt.Errorf("data: size=%d with resize=pad: allowed %d..4096 for %dx%d images", size, max(h0, w0), w0, h0)
		}
		d.h, d.w = size, size
	case ResizeScale:
		if size < 1 || size > 4096 {
			return nil, fmt.Errorf("data: size=%d with resize=resize: allowed 1..4096", size)
		}
		d.h, d.w = size, size
	default:
		return nil, fmt.Errorf("data: resize=%d: allowed none, pad, resize", int(resize))
	}
	return d, nil
}

// Len is the number of images.
func (d *Images) Len() int { return d.n }

// Shape is the output (C, H, W).
func (d *Images) Shape() (c, h, w int) { return d.c, d.h, d.w }

// NumClasses is the number of classes, 0 when unlabelled.
func (d *Images) NumClasses() int { return d.numClasses }

// ClassNames returns a copy of the class names, nil when unlabelled.
func (d *Images) ClassNames() []string { return append([]string(nil), d.names...) }

// Label returns the label of example i, or -1 when unlabelled.
func (d *Images) Label(i int) int {
	if d.labels == nil || i < 0 || i >= d.n {
		return -1
	}
	return int(d.labels[i])
}

// Example writes example i as (C, H, W) float32 in [-1, 1] into dst.
func (d *Images) Example(i int, dst []float32) (int, error) {
	if i < 0 || i >= d.n {
		return 0, fmt.Errorf("data: example %d: allowed 0..%d", i, d.n-1)
	}
	if len(dst) != d.c*d.h*d.w {
		return 0, fmt.Errorf("data: example buffer has %d values, shape (%d,%d,%d) needs %d", len(dst), d.c, d.h, d.w, d.c*d.h*d.w)
	}
	per := d.c * d.h0 * d.w0
	src := d.pix[i*per : (i+1)*per] // (C, H0, W0)
	switch d.resize {
	case ResizeNone:
		for j, u := range src {
			dst[j] = img.FromUint8(u)
		}
	case ResizePad:
		for j := range dst {
			dst[j] = -1
		}
		oy, ox := (d.h-d.h0)/2, (d.w-d.w0)/2
		for ch := range d.c {
			for y := range d.h0 {
				row := src[(ch*d.h0+y)*d.w0 : (ch*d.h0+y+1)*d.w0]
				out := dst[(ch*d.h+oy+y)*d.w+ox:]
				for x, u := range row {
					out[x] = img.FromUint8(u)
				}
			}
		}
	case ResizeScale:
		u, err := img.Fit(d.image(src), d.c, d.h, d.w)
		if err != nil {
			return 0, fmt.Errorf("data: example %d: %w", i, err)
		}
		for j, v := range u {
			dst[j] = img.FromUint8(v)
		}
	}
	return d.Label(i), nil
}

// image wraps one stored (C, H0, W0) example as an image.Image.
func (d *Images) image(src []uint8) image.Image {
	r := image.Rect(0, 0, d.w0, d.h0)
	if d.c == 1 {
		return &image.Gray{Pix: src, Stride: d.w0, Rect: r}
	}
	m := image.NewRGBA(r)
	plane := d.h0 * d.w0
	for j := range plane {
		m.Pix[4*j], m.Pix[4*j+1], m.Pix[4*j+2], m.Pix[4*j+3] = src[j], src[plane+j], src[2*plane+j], 255
	}
	return m
}

// head is the first n examples of a dataset.
type head struct {
	Dataset
	n int
}

func (h head) Len() int { return h.n }

func (h head) Example(i int, dst []float32) (int, error) {
	if i < 0 || i >= h.n {
		return 0, fmt.Errorf("data: example %d: allowed 0..%d", i, h.n-1)
	}
	return h.Dataset.Example(i, dst)
}

// Head returns a view of the first n examples of ds (all of them when
// n <= 0 or n >= ds.Len()), for example for `ddpm eval --limit N`.
func Head(ds Dataset, n int) Dataset {
	if n <= 0 || n >= ds.Len() {
		return ds
	}
	return head{ds, n}
}
