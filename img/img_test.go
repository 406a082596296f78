package img

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/diffusion"
)

func TestToUint8(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		x    float32
		want uint8
	}{
		{-1, 0}, {1, 255}, {0, 128}, {-2, 0}, {3, 255}, {nan, 0}, {inf, 255}, {-inf, 0},
		{FromUint8(77), 77}, {-1 + 0.51/127.5, 1}, {-1 + 0.49/127.5, 0},
	} {
		if got := ToUint8(tc.x); got != tc.want {
			t.Errorf("ToUint8(%v) = %d, want %d", tc.x, got, tc.want)
		}
	}
	for u := range 256 {
		if got := ToUint8(FromUint8(uint8(u))); got != uint8(u) {
			t.Fatalf("round trip %d -> %d", u, got)
		}
	}
}

// rampBatch is a batch whose byte values are (n*7 + i) mod 256 at flat
// offset i of image n.
func rampBatch(n, c, h, w int) diffusion.Batch {
	b := diffusion.NewBatch(n, c, h, w)
	per := c * h * w
	for i := range b.Data {
		b.Data[i] = FromUint8(uint8((i/per)*7 + i%per))
	}
	return b
}

func TestToImages(t *testing.T) {
	b := rampBatch(2, 3, 4, 5)
	ims, err := ToImages(b)
	if err != nil {
		t.Fatal(err)
	}
	for n, im := range ims {
		m := im.(*image.RGBA)
		for y := range 4 {
			for x := range 5 {
				c := m.RGBAAt(x, y)
				for ch, got := range []uint8{c.R, c.G, c.B} {
					want := ToUint8(b.Data[((n*3+ch)*4+y)*5+x])
					if got != want {
						t.Fatalf("image %d (%d,%d) ch %d = %d, want %d", n, x, y, ch, got, want)
					}
				}
				if c.A != 255 {
					t.Fatalf("alpha %d", c.A)
				}
			}
		}
	}
	g, err := ToImages(rampBatch(1, 1, 3, 3))
	if err != nil {
		t.Fatal(err)
	}
	if got := g[0].(*image.Gray).GrayAt(2, 1).Y; got != 5 {
		t.Fatalf("gray (2,1) = %d, want 5", got)
	}
}

func TestBadBatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    diffusion.Batch
		want string
	}{
		{"two channels", diffusion.NewBatch(1, 2, 2, 2), "C=2"},
		{"short data", diffusion.Batch{N: 1, C: 1, H: 2, W: 2, Data: make([]float32, 3)}, "needs 4 values"},
		{"zero", diffusion.Batch{}, "must be >= 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ToImages(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Grid(diffusion.NewBatch(1, 1, 2, 2), GridOptions{Padding: -1}); err == nil || !strings.Contains(err.Error(), "Padding") {
		t.Fatalf("negative padding: %v", err)
	}
}

func TestGrid(t *testing.T) {
	for _, tc := range []struct {
		name             string
		n, nrow, pad     int
		wantW, wantH     int
		cellX, cellY, at int // image `at` has its top-left pixel at (cellX, cellY)
	}{
		{"auto 5", 5, 0, 2, 3*(4+2) + 2, 2*(3+2) + 2, 2 + 1*(4+2), 2 + 1*(3+2), 4},
		{"one row", 3, 8, 0, 3 * 4, 3, 8, 0, 2},
		{"column", 3, 1, 1, 4 + 2, 3*(3+1) + 1, 1, 1 + 2*(3+1), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := rampBatch(tc.n, 1, 3, 4)
			im, err := Grid(b, GridOptions{NRow: tc.nrow, Padding: tc.pad, PadValue: 9})
			if err != nil {
				t.Fatal(err)
			}
			g := im.(*image.Gray)
			if g.Rect.Dx() != tc.wantW || g.Rect.Dy() != tc.wantH {
				t.Fatalf("grid %v, want %dx%d", g.Rect, tc.wantW, tc.wantH)
			}
			if got, want := g.GrayAt(tc.cellX, tc.cellY).Y, ToUint8(b.Data[tc.at*12]); got != want {
				t.Fatalf("image %d top-left = %d, want %d", tc.at, got, want)
			}
			if tc.pad > 0 && g.GrayAt(0, 0).Y != 9 {
				t.Fatalf("padding = %d, want 9", g.GrayAt(0, 0).Y)
			}
		})
	}
}

func TestPNGDeterministic(t *testing.T) {
	b := rampBatch(16, 3, 8, 8)
	dir := t.TempDir()
	p1, p2 := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png")
	for _, p := range []string{p1, p2} {
		if err := WriteGrid(p, b, GridOptions{Padding: 2}); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := os.ReadFile(p1)
	c, _ := os.ReadFile(p2)
	if len(a) == 0 || !bytes.Equal(a, c) {
		t.Fatal("same batch gave different PNG bytes")
	}
	b.Data[0] = 1
	if err := WriteGrid(p2, b, GridOptions{Padding: 2}); err != nil {
		t.Fatal(err)
	}
	c, _ = os.ReadFile(p2)
	if bytes.Equal(a, c) {
		t.Fatal("different batch gave the same PNG bytes")
	}
}

func TestWriteEachAndReadBack(t *testing.T) {
	for _, c := range []int{1, 3} {
		b := rampBatch(3, c, 6, 5)
		dir := filepath.Join(t.TempDir(), "out")
		paths, err := WriteEach(dir, "s", b)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != 3 || filepath.Base(paths[2]) != "s00002.png" {
			t.Fatalf("paths %v", paths)
		}
		per := c * 30
		for n, p := range paths {
			got, err := ReadFile(p, c, 6, 5)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range got.Data {
				if v != b.Data[n*per+i] {
					t.Fatalf("C=%d image %d value %d = %v, want %v (exact round trip)", c, n, i, v, b.Data[n*per+i])
				}
			}
		}
	}
}

func TestFitCropsCenter(t *testing.T) {
	// A 12x4 image: white in the centred 4x4 square, black elsewhere.
	src := image.NewRGBA(image.Rect(0, 0, 12, 4))
	for y := range 4 {
		for x := 4; x < 8; x++ {
			src.Set(x, y, color.White)
		}
	}
	u, err := Fit(src, 1, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range u {
		if v != 255 {
			t.Fatalf("pixel %d = %d, want 255 (centre crop)", i, v)
		}
	}
	// Downscale a checkerboard 16x16 -> 2x2: area-like averaging gives mid-gray.
	cb := image.NewGray(image.Rect(0, 0, 16, 16))
	for i := range cb.Pix {
		if (i%16+i/16)%2 == 0 {
			cb.Pix[i] = 255
		}
	}
	u, err = Fit(cb, 3, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range u {
		if v < 100 || v > 155 {
			t.Fatalf("downscaled checkerboard value %d = %d, want about 128", i, v)
		}
	}
	if _, err := Fit(cb, 2, 2, 2); err == nil {
		t.Fatal("channels=2 accepted")
	}
}

func TestDecodeFormatsAndErrors(t *testing.T) {
	src := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 4)
	}
	var pb, jb bytes.Buffer
	if err := png.Encode(&pb, src); err != nil {
		t.Fatal(err)
	}
	if err := jpeg.Encode(&jb, src, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	b, err := Decode(bytes.NewReader(pb.Bytes()), 1, 8, 8)
	if err != nil || b.N != 1 || b.C != 1 || b.H != 8 || b.Data[9] != FromUint8(36) {
		t.Fatalf("png: %v %+v", err, b)
	}
	b, err = Decode(bytes.NewReader(jb.Bytes()), 3, 8, 8)
	if err != nil || b.C != 3 || math.Abs(float64(b.Data[9]-FromUint8(36))) > 0.05 {
		t.Fatalf("jpeg: %v", err)
	}
	// A PNG header claiming 100000x100000 pixels.
	huge := append([]byte(nil), pb.Bytes()...)
	huge[16], huge[17], huge[18], huge[19] = 0, 1, 0x86, 0xa0
	huge[20], huge[21], huge[22], huge[23] = 0, 1, 0x86, 0xa0
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "not a readable"},
		{"text", []byte("hello"), "not a readable"},
		{"truncated png", pb.Bytes()[:40], "not a readable"},
		{"huge header", huge, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(bytes.NewReader(tc.data), 1, 8, 8)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "missing.png"), 1, 8, 8); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestMask(t *testing.T) {
	m := image.NewGray(image.Rect(0, 0, 8, 8))
	for y := range 8 {
		for x := range 4 {
			m.SetGray(x, y, color.Gray{Y: 255}) // left half white = keep
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	b, err := DecodeMask(&buf, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{1, 1, 0, 0}
	for y := range 4 {
		for x := range 4 {
			if b.Data[y*4+x] != want[x] {
				t.Fatalf("mask (%d,%d) = %v, want %v", x, y, b.Data[y*4+x], want[x])
			}
		}
	}
}

// TestGridImagesMatchesGrid: the image-list grid (the server's) equals the
// batch grid (the CLI's) for the same pixels.
func TestGridImagesMatchesGrid(t *testing.T) {
	b := diffusion.NewBatch(5, 1, 4, 3)
	for i := range b.Data {
		b.Data[i] = float32(i%13)/6.5 - 1
	}
	want, err := Grid(b, DefaultGrid)
	if err != nil {
		t.Fatal(err)
	}
	ims, err := ToImages(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := GridImages(ims, DefaultGrid)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.(*image.Gray).Pix, want.(*image.Gray).Pix) || got.Bounds() != want.Bounds() {
		t.Fatal("GridImages and Grid differ")
	}
	if _, err := GridImages([]image.Image{ims[0], image.NewGray(image.Rect(0, 0, 2, 2))}, DefaultGrid); err == nil {
		t.Fatal("images of two sizes: no error")
	}
}
