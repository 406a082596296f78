package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestReadDTypes(t *testing.T) {
	f, err := ReadFile(filepath.Join("testdata", "dtypes.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	inf := float32(math.Inf(1))
	half := []float32{0, float32(math.Copysign(0, -1)), 1, -2.5, 65504, 6.1035156e-05, 5.9604645e-08, inf}
	bf := append([]float32(nil), half...)
	bf[4] = 65536 // 65504 rounds to 65536 in bfloat16's 8-bit significand
	ints := []float32{0, 1, -1, 127, -128, 100}
	f64 := []float64{0.1, -1e10, 3.0, 1e-45}
	tests := []struct {
		name  string
		dtype string
		shape []int
		want  []float32
	}{
		{"f16", "F16", []int{2, 4}, half},
		{"bf16", "BF16", []int{8}, bf},
		{"f64", "F64", []int{2, 2}, []float32{float32(f64[0]), float32(f64[1]), float32(f64[2]), float32(f64[3])}},
		{"f32", "F32", []int{}, []float32{1.5}},
		{"i64", "I64", []int{6}, ints},
		{"i32", "I32", []int{6}, ints},
		{"i8", "I8", []int{6}, ints},
		{"u8", "U8", []int{3}, []float32{0, 128, 255}},
		{"bool", "BOOL", []int{2}, []float32{1, 0}},
		{"empty", "F32", []int{0, 3}, []float32{}},
	}
	if len(f.Tensors) != len(tests) {
		t.Errorf("read %d tensors, want %d", len(f.Tensors), len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := f.Tensors[tc.name]
			if !ok {
				t.Fatal("missing")
			}
			if got.DType != tc.dtype || !reflect.DeepEqual(got.Shape, tc.shape) {
				t.Fatalf("got %s %v, want %s %v", got.DType, got.Shape, tc.dtype, tc.shape)
			}
			for i := range tc.want {
				// Compare bits so that -0 and +0 differ.
				if math.Float32bits(got.Data[i]) != math.Float32bits(tc.want[i]) {
					t.Errorf("[%d] = %g, want %g", i, got.Data[i], tc.want[i])
				}
			}
		})
	}
	if f.Metadata["made_by"] != "gen.py" {
		t.Errorf("metadata = %v", f.Metadata)
	}
}

// TestHalfExhaustive checks every binary16 value against a slow reference
// that evaluates (-1)^s * 2^(e-15) * (1 + f/1024) directly.
func TestHalfExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		s, e, fr := h>>15, (h>>10)&0x1f, h&0x3ff
		var want float64
		switch {
		case e == 0x1f && fr == 0:
			want = math.Inf(1)
		case e == 0x1f:
			if got := halfToFloat32(uint16(h)); !math.IsNaN(float64(got)) {
				t.Fatalf("%#04x: got %g, want NaN", h, got)
			}
			continue
		case e == 0:
			want = math.Ldexp(float64(fr), -24)
		default:
			want = math.Ldexp(1+float64(fr)/1024, e-15)
		}
		if s == 1 {
			want = -want
		}
		got := halfToFloat32(uint16(h))
		if math.Float32bits(got) != math.Float32bits(float32(want)) {
			t.Fatalf("%#04x: got %g, want %g", h, got, want)
		}
	}
}

func sampleFile() *File {
	return &File{
		Metadata: map[string]string{"format": "pt", "ddpm.note": `{"a": [1, 2]} <&>`},
		Tensors: map[string]Tensor{
			"conv.weight": {Shape: []int{2, 1, 3, 3}, Data: seq(18)},
			"conv.bias":   {Shape: []int{2}, Data: []float32{-1, float32(math.Inf(1))}},
			"scalar":      {Shape: nil, Data: []float32{42}},
			"empty":       {Shape: []int{0}, Data: nil},
			"uni\u00e9":   {DType: "F32", Shape: []int{1}, Data: []float32{3}},
		},
	}
}

func seq(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(i)*0.5 - 3
	}
	return s
}

func TestWriteReadRoundTrip(t *testing.T) {
	f := sampleFile()
	var a, b bytes.Buffer
	if err := Write(&a, f); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same File differ")
	}
	n := binary.LittleEndian.Uint64(a.Bytes())
	if (8+n)%8 != 0 {
		t.Fatalf("data starts at %d, not 8-byte aligned", 8+n)
	}
	got, err := Read(bytes.NewReader(a.Bytes()), int64(a.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Metadata, f.Metadata) {
		t.Errorf("metadata %v, want %v", got.Metadata, f.Metadata)
	}
	if len(got.Tensors) != len(f.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(f.Tensors))
	}
	for name, w := range f.Tensors {
		g := got.Tensors[name]
		if g.DType != "F32" || g.NumElements() != w.NumElements() || len(g.Shape) != len(w.Shape) {
			t.Errorf("%s: got %s %v, want F32 %v", name, g.DType, g.Shape, w.Shape)
		}
		if len(g.Data) != len(w.Data) || (len(w.Data) > 0 && !reflect.DeepEqual(g.Data, w.Data)) {
			t.Errorf("%s: data %v, want %v", name, g.Data, w.Data)
		}
	}
	h, err := ReadHeader(bytes.NewReader(a.Bytes()), int64(a.Len()))
	if err != nil {
		t.Fatal(err)
	}
	// Sorted names are laid out in order (zero-size tensors tie on offsets).
	var names []string
	for _, ti := range h.Tensors {
		names = append(names, ti.Name)
	}
	if want := []string{"conv.bias", "conv.weight", "empty", "scalar", "uni\u00e9"}; !reflect.DeepEqual(names, want) {
		t.Errorf("file order %v, want %v", names, want)
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name string
		f    *File
		want string
	}{
		{"nil", nil, "nil File"},
		{"short data", &File{Tensors: map[string]Tensor{"w": {Shape: []int{2, 2}, Data: seq(3)}}}, `tensor "w": shape [2 2] needs 4 values, Data has 3`},
		{"negative", &File{Tensors: map[string]Tensor{"w": {Shape: []int{-1}}}}, "shape[0] = -1"},
		{"overflow", &File{Tensors: map[string]Tensor{"w": {Shape: []int{1 << 31, 1 << 31}}}}, "shape[0] = 2147483648"},
		{"wraps to zero", &File{Tensors: map[string]Tensor{"w": {Shape: []int{1 << 30, 1 << 30, 1 << 30, 1 << 30}}}}, "too large"},
		{"f16", &File{Tensors: map[string]Tensor{"w": {DType: "F16", Shape: []int{1}, Data: seq(1)}}}, "F32 only"},
		{"reserved", &File{Tensors: map[string]Tensor{"__metadata__": {Shape: []int{1}, Data: seq(1)}}}, "reserved"},
		{"empty name", &File{Tensors: map[string]Tensor{"": {Shape: []int{1}, Data: seq(1)}}}, "reserved or empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Fatalf("wrote %d bytes before failing validation", buf.Len())
			}
		})
	}
}

// build assembles a safetensors file from a raw JSON header and data.
func build(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestReadErrors(t *testing.T) {
	var good bytes.Buffer
	if err := Write(&good, sampleFile()); err != nil {
		t.Fatal(err)
	}
	g := good.Bytes()
	d8 := make([]byte, 8)
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "shorter than the 8-byte header length"},
		{"7 bytes", g[:7], "shorter than the 8-byte"},
		{"truncated header", g[:40], "larger than the"},
		{"truncated data", g[:len(g)-4], "run past the"},
		{"trailing bytes", append(append([]byte(nil), g...), 0), "trailing bytes after the last tensor"},
		{"huge header length", binary.LittleEndian.AppendUint64(nil, 1<<40), "exceeds the limit"},
		{"header 200 MiB", binary.LittleEndian.AppendUint64(nil, 200<<20), "exceeds the limit"},
		{"bad json", build(`{"a":`, nil), "header JSON"},
		{"not object", build(`[1,2]`, nil), "does not start with '{'"},
		{"garbage after", build(`{} x`, nil), "trailing garbage"},
		{"unknown dtype", build(`{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}`, d8), `dtype "C64"`},
		{"no dtype", build(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, d8[:4]), "no dtype"},
		{"no shape", build(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, d8[:4]), "no shape"},
		{"bad offsets", build(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}}`, d8[:4]), "data_offsets has 1 values"},
		{"reversed offsets", build(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, d8[:4]), "0 <= begin <= end"},
		{"shape mismatch", build(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, d8), "needs 12 bytes"},
		{"negative dim", build(`{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, d8), "shape[0] = -2"},
		{"huge dims", build(`{"w":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,8]}}`, d8), "too large"},
		{"overlap", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), "overlap"},
		{"hole", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), "belong to no tensor"},
		{"out of range", build(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, d8), "run past the 8-byte data buffer"},
		{"duplicate", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, d8), `duplicate entry "a"`},
		{"bad metadata", build(`{"__metadata__":{"k":1}}`, nil), "object of string values"},
		{"empty name", build(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, d8[:4]), "empty name"},
		{"invalid utf8", build("{\"\xff\":{}}", nil), "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tc.in), int64(len(tc.in)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
		})
	}
}

func TestReadFileNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(path, build(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}`, make([]byte, 4)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"w"`) {
		t.Fatalf("error %v, want it to name %s and tensor \"w\"", err, path)
	}
}

// fixtureDir returns the shared diffusers fixture or skips the test.
func fixtureDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "fixtures", "diffusers-unet-small")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared fixtures not found at %s (they live outside the repository)", dir)
	}
	return dir
}

func TestReadDiffusersFixture(t *testing.T) {
	dir := fixtureDir(t)
	f, err := ReadFile(filepath.Join(dir, "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	params := 0
	for _, tn := range f.Tensors {
		params += len(tn.Data)
	}
	if len(f.Tensors) != 182 || params != 1112801 {
		t.Fatalf("%d tensors, %d parameters; want 182, 1112801", len(f.Tensors), params)
	}
	if w := f.Tensors["conv_in.weight"]; !reflect.DeepEqual(w.Shape, []int{32, 1, 3, 3}) {
		t.Errorf("conv_in.weight shape %v", w.Shape)
	}
	// Our writer's output of the same tensors reads back identically.
	var buf bytes.Buffer
	if err := Write(&buf, f); err != nil {
		t.Fatal(err)
	}
	g, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Tensors, f.Tensors) {
		t.Fatal("rewritten fixture differs")
	}
}
