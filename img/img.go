package img

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"

	"golang.org/x/image/draw"

	"github.com/ddpm-go/ddpm/diffusion"
)

// MaxPixels bounds the width·height an image header may declare before its
// pixels are decoded (64 Mpx, for example 8192×8192); larger images are an
// error, so a small malicious file cannot make the decoder allocate gigabytes.
const MaxPixels = 64 << 20

// MaxBytes bounds the encoded size of one image read by Decode (256 MiB).
const MaxBytes = 256 << 20

// ErrFormat reports image bytes that are neither PNG nor JPEG, or that are
// corrupt.
var ErrFormat = errors.New("img: not a readable PNG or JPEG image")

// ToUint8 maps a value in [-1, 1] to a byte: round((x+1)·127.5) clamped to
// [0, 255], the inverse of x = u/127.5 − 1. NaN maps to 0.
func ToUint8(x float32) uint8 {
	v := (float64(x) + 1) * 127.5
	if !(v > 0) { // also NaN
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(math.Floor(v + 0.5))
}

// FromUint8 maps a byte to [-1, 1]: x = u/127.5 − 1.
func FromUint8(u uint8) float32 { return float32(u)/127.5 - 1 }

// checkBatch validates the shape of an image batch: C must be 1 or 3.
func checkBatch(b diffusion.Batch) error {
	if err := b.Check(); err != nil {
		return fmt.Errorf("img: %w", err)
	}
	if b.C != 1 && b.C != 3 {
		return fmt.Errorf("img: batch has C=%d channels; images need C=1 (gray) or C=3 (RGB)", b.C)
	}
	return nil
}

// ToImages converts a batch (N, C, H, W) in [-1, 1] to N images using
// ToUint8 per value: *image.Gray for C = 1, opaque *image.RGBA for C = 3.
func ToImages(b diffusion.Batch) ([]image.Image, error) {
	if err := checkBatch(b); err != nil {
		return nil, err
	}
	out := make([]image.Image, b.N)
	plane := b.H * b.W
	for n := range b.N {
		x := b.Data[n*b.C*plane : (n+1)*b.C*plane] // (C, H, W)
		r := image.Rect(0, 0, b.W, b.H)
		if b.C == 1 {
			g := image.NewGray(r)
			for i, v := range x {
				g.Pix[i] = ToUint8(v)
			}
			out[n] = g
			continue
		}
		m := image.NewRGBA(r)
		for i := range plane {
			m.Pix[4*i+0] = ToUint8(x[i])
			m.Pix[4*i+1] = ToUint8(x[plane+i])
			m.Pix[4*i+2] = ToUint8(x[2*plane+i])
			m.Pix[4*i+3] = 255
		}
		out[n] = m
	}
	return out, nil
}

// GridOptions lays out a grid of images, as torchvision's make_grid.
// The zero value gives a square-ish grid with no padding.
type GridOptions struct {
	// NRow is the number of images per row; 0 means ceil(sqrt(N)). A value
	// above N is lowered to N.
	NRow int
	// Padding is the number of pixels around and between images (>= 0).
	Padding int
	// PadValue is the 8-bit value of the padding (0 = black).
	PadValue uint8
}

// DefaultGrid is the grid layout of every grid ddpm writes (the CLI's
// --out and the server's /v1/generate): torchvision's make_grid defaults,
// 2 black pixels around and between the images, ceil(sqrt(N)) per row.
var DefaultGrid = GridOptions{Padding: 2}

// Grid tiles the batch (N, C, H, W) into one image (see GridImages).
func Grid(b diffusion.Batch, opts GridOptions) (image.Image, error) {
	ims, err := ToImages(b)
	if err != nil {
		return nil, err
	}
	return GridImages(ims, opts)
}

// GridImages tiles images of one size into one image, row by row, NRow
// images per row and ceil(N/NRow) rows; empty cells are filled with
// PadValue. The result is W' = NRow·(W+P)+P wide and H' = rows·(H+P)+P
// tall for padding P, grayscale when every image is *image.Gray, else
// RGBA. A single image is returned as it is.
func GridImages(ims []image.Image, opts GridOptions) (image.Image, error) {
	if len(ims) == 0 {
		return nil, fmt.Errorf("img: grid of no images")
	}
	if opts.Padding < 0 || opts.Padding > 1024 {
		return nil, fmt.Errorf("img: grid Padding=%d: allowed 0..1024", opts.Padding)
	}
	if opts.NRow < 0 {
		return nil, fmt.Errorf("img: grid NRow=%d: allowed 0 (auto) or >= 1", opts.NRow)
	}
	if len(ims) == 1 {
		return ims[0], nil
	}
	n := len(ims)
	w, h := ims[0].Bounds().Dx(), ims[0].Bounds().Dy()
	gray := true
	for i, im := range ims {
		if b := im.Bounds(); b.Dx() != w || b.Dy() != h {
			return nil, fmt.Errorf("img: grid image %d is %dx%d, image 0 %dx%d: all must have one size", i, b.Dx(), b.Dy(), w, h)
		}
		if _, ok := im.(*image.Gray); !ok {
			gray = false
		}
	}
	ncol := opts.NRow
	if ncol == 0 {
		ncol = int(math.Ceil(math.Sqrt(float64(n))))
	}
	ncol = min(ncol, n)
	rows := (n + ncol - 1) / ncol
	p := opts.Padding
	r := image.Rect(0, 0, ncol*(w+p)+p, rows*(h+p)+p)
	if r.Dx()*r.Dy() > MaxPixels {
		return nil, fmt.Errorf("img: grid of %dx%d pixels exceeds MaxPixels=%d", r.Dx(), r.Dy(), MaxPixels)
	}
	var dst draw.Image
	var bg color.Color
	if gray {
		dst = image.NewGray(r)
		bg = color.Gray{Y: opts.PadValue}
	} else {
		dst = image.NewRGBA(r)
		bg = color.RGBA{opts.PadValue, opts.PadValue, opts.PadValue, 255}
	}
	draw.Draw(dst, r, image.NewUniform(bg), image.Point{}, draw.Src)
	for i, im := range ims {
		x0 := p + (i%ncol)*(w+p)
		y0 := p + (i/ncol)*(h+p)
		draw.Draw(dst, image.Rect(x0, y0, x0+w, y0+h), im, im.Bounds().Min, draw.Src)
	}
	return dst, nil
}

// EncodePNG writes im as a PNG with fixed encoder settings (default
// compression, no metadata), so the same pixels always give the same bytes.
func EncodePNG(w io.Writer, im image.Image) error {
	enc := png.Encoder{CompressionLevel: png.DefaultCompression}
	if err := enc.Encode(w, im); err != nil {
		return fmt.Errorf("img: encode png: %w", err)
	}
	return nil
}

// WriteFile writes im as a PNG to path atomically: it writes a temporary file
// in the same directory and renames it, so a reader never sees half a file.
func WriteFile(path string, im image.Image) error {
	var buf bytes.Buffer
	if err := EncodePNG(&buf, im); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*.png")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(buf.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteGrid writes the batch as one grid PNG (see Grid) to path.
func WriteGrid(path string, b diffusion.Batch, opts GridOptions) error {
	im, err := Grid(b, opts)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return WriteFile(path, im)
}

// WriteEach writes image n of the batch to dir/<prefix><n>.png with n
// zero-padded to 5 digits (prefix may be empty), creating dir if needed.
// It returns the paths in batch order.
func WriteEach(dir, prefix string, b diffusion.Batch) ([]string, error) {
	ims, err := ToImages(b)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("img: create %s: %w", dir, err)
	}
	paths := make([]string, len(ims))
	for n, im := range ims {
		paths[n] = filepath.Join(dir, fmt.Sprintf("%s%05d.png", prefix, n))
		if err := WriteFile(paths[n], im); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// Fit resizes and center-crops im to w×h pixels and returns c planes of
// bytes (c, h, w): c = 1 gives luma (ITU-R BT.601, as color.GrayModel),
// c = 3 gives RGB. The largest centred region of im with the aspect ratio
// w:h is scaled with a Catmull-Rom kernel, which widens with the scale
// factor when shrinking (area-like anti-aliasing). An image already w×h is
// copied exactly. Transparent pixels are composited over black.
func Fit(im image.Image, c, h, w int) ([]uint8, error) {
	if c != 1 && c != 3 {
		return nil, fmt.Errorf("img: channels=%d: allowed 1 (gray) or 3 (RGB)", c)
	}
	if h < 1 || w < 1 || h*w > MaxPixels {
		return nil, fmt.Errorf("img: target size %dx%d: allowed 1..%d pixels", w, h, MaxPixels)
	}
	sb := im.Bounds()
	sw, sh := sb.Dx(), sb.Dy()
	if sw < 1 || sh < 1 {
		return nil, fmt.Errorf("img: empty source image (%dx%d)", sw, sh)
	}
	// Largest centred crop with aspect w:h.
	cw, ch := sw, sh
	if sw*h > sh*w {
		cw = max(1, int(math.Round(float64(sh)*float64(w)/float64(h))))
	} else {
		ch = max(1, int(math.Round(float64(sw)*float64(h)/float64(w))))
	}
	x0 := sb.Min.X + (sw-cw)/2
	y0 := sb.Min.Y + (sh-ch)/2
	sr := image.Rect(x0, y0, x0+cw, y0+ch)
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	if cw == w && ch == h {
		draw.Draw(rgba, rgba.Rect, im, sr.Min, draw.Src)
	} else {
		draw.CatmullRom.Scale(rgba, rgba.Rect, im, sr, draw.Src, nil)
	}
	plane := h * w
	out := make([]uint8, c*plane)
	for i := range plane {
		r, g, b := rgba.Pix[4*i], rgba.Pix[4*i+1], rgba.Pix[4*i+2]
		if c == 1 {
			// color.GrayModel on 8-bit values widened to 16 bits.
			r16, g16, b16 := uint32(r)*0x101, uint32(g)*0x101, uint32(b)*0x101
			out[i] = uint8((19595*r16 + 38470*g16 + 7471*b16 + 1<<15) >> 24)
			continue
		}
		out[i], out[plane+i], out[2*plane+i] = r, g, b
	}
	return out, nil
}

// DecodeImage decodes PNG or JPEG bytes from r, refusing more than MaxBytes
// of input or a header declaring more than MaxPixels pixels.
func DecodeImage(r io.Reader) (image.Image, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("img: read: %w", err)
	}
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("img: image larger than MaxBytes=%d", MaxBytes)
	}
	var dec func(io.Reader) (image.Image, error)
	var cfgf func(io.Reader) (image.Config, error)
	switch {
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		dec, cfgf = png.Decode, png.DecodeConfig
	case bytes.HasPrefix(data, []byte{0xff, 0xd8}):
		dec, cfgf = jpeg.Decode, jpeg.DecodeConfig
	default:
		return nil, ErrFormat
	}
	cfg, err := cfgf(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if cfg.Width < 1 || cfg.Height < 1 || int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, fmt.Errorf("img: image is %dx%d: allowed 1..%d pixels", cfg.Width, cfg.Height, MaxPixels)
	}
	im, err := dec(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	return im, nil
}

// Decode reads one PNG or JPEG image from r and returns it as a (1, c, h, w)
// batch in [-1, 1] (x = u/127.5 − 1) after Fit (resize and center crop).
// It is the path for --init-image and uploaded images.
func Decode(r io.Reader, c, h, w int) (diffusion.Batch, error) {
	im, err := DecodeImage(r)
	if err != nil {
		return diffusion.Batch{}, err
	}
	u, err := Fit(im, c, h, w)
	if err != nil {
		return diffusion.Batch{}, err
	}
	b := diffusion.NewBatch(1, c, h, w)
	for i, v := range u {
		b.Data[i] = FromUint8(v)
	}
	return b, nil
}

// ReadFile is Decode on the file at path.
func ReadFile(path string, c, h, w int) (diffusion.Batch, error) {
	f, err := os.Open(path)
	if err != nil {
		return diffusion.Batch{}, fmt.Errorf("img: %w", err)
	}
	defer f.Close()
	b, err := Decode(f, c, h, w)
	if err != nil {
		return diffusion.Batch{}, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// DecodeMask reads an inpainting mask image and returns a (1, 1, h, w)
// batch of 1 (KEEP: white, luma ≥ 128 after Fit, the pixel is known and
// taken from the init image) and 0 (GENERATE: black, luma < 128).
func DecodeMask(r io.Reader, h, w int) (diffusion.Batch, error) {
	im, err := DecodeImage(r)
	if err != nil {
		return diffusion.Batch{}, err
	}
	u, err := Fit(im, 1, h, w)
	if err != nil {
		return diffusion.Batch{}, err
	}
	b := diffusion.NewBatch(1, 1, h, w)
	for i, v := range u {
		if v >= 128 {
			b.Data[i] = 1
		}
	}
	return b, nil
}

// ReadMask is DecodeMask on the file at path.
func ReadMask(path string, h, w int) (diffusion.Batch, error) {
	f, err := os.Open(path)
	if err != nil {
		return diffusion.Batch{}, fmt.Errorf("img: %w", err)
	}
	defer f.Close()
	b, err := DecodeMask(f, h, w)
	if err != nil {
		return diffusion.Batch{}, fmt.Errorf("read mask %s: %w", path, err)
	}
	return b, nil
}
