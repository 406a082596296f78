package npy

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestReadNumPyFiles(t *testing.T) {
	want23 := []float64{-0.5, -0.25, 0, 0.25, 0.5, 0.75}
	tests := []struct {
		file  string
		dtype DType
		shape []int
		want  []float64
	}{
		{"f4_2x3.npy", Float32, []int{2, 3}, want23},
		{"f4_2x3_v2.npy", Float32, []int{2, 3}, want23},
		{"f4_2x3_v3.npy", Float32, []int{2, 3}, want23},
		{"f8_2x3.npy", Float64, []int{2, 3}, []float64{-0.5 + 1e-9, -0.25 + 1e-9, 1e-9, 0.25 + 1e-9, 0.5 + 1e-9, 0.75 + 1e-9}},
		{"i8_4.npy", Int64, []int{4}, []float64{-3, 0, 7, 1 << 40}},
		{"i4_4.npy", Int32, []int{4}, []float64{-3, 0, 7, 1 << 30}},
		{"u1_2x2.npy", Uint8, []int{2, 2}, []float64{0, 1, 128, 255}},
		{"f4_scalar.npy", Float32, []int{}, []float64{2.5}},
		{"f4_empty.npy", Float32, []int{0, 3}, []float64{}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			a, err := ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if a.DType != tc.dtype || !reflect.DeepEqual(a.Shape, tc.shape) {
				t.Fatalf("got %s %v, want %s %v", a.DType, a.Shape, tc.dtype, tc.shape)
			}
			got := a.Float64s()
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Float64s = %v, want %v", got, tc.want)
			}
			f32 := a.Float32s()
			for i := range f32 {
				if f32[i] != float32(tc.want[i]) {
					t.Fatalf("Float32s[%d] = %v, want %v", i, f32[i], float32(tc.want[i]))
				}
			}
			ints, err := a.Int64s()
			if tc.dtype.IsFloat() {
				if err == nil {
					t.Fatal("Int64s on a float array: want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range ints {
				if float64(ints[i]) != tc.want[i] {
					t.Fatalf("Int64s[%d] = %d, want %v", i, ints[i], tc.want[i])
				}
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("testdata", "f4_2x3.npy"))
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(dict string) []byte {
		b := append([]byte("\x93NUMPY\x01\x00"), byte(len(dict)), byte(len(dict)>>8))
		return append(b, dict...)
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "unexpected EOF"},
		{"bad magic", []byte("\x93NUMPX\x01\x00\x00\x00"), "magic"},
		{"version 4", []byte("\x93NUMPY\x04\x00\x00\x00"), "version 4.0"},
		{"short header", good[:40], "unexpected EOF"},
		{"truncated data", good[:len(good)-1], "unexpected EOF"},
		{"fortran", mustRead(t, "f4_fortran.npy"), "fortran_order is True"},
		{"big endian", mustRead(t, "f4_bigendian.npy"), "big-endian"},
		{"unknown dtype", hdr("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n"), `descr "<c8"`},
		{"structured", hdr("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n"), "structured"},
		{"missing shape", hdr("{'descr': '<f4', 'fortran_order': False}\n"), "lacks 'shape'"},
		{"extra key", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}\n"), "unexpected header key"},
		{"dup key", hdr("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}\n"), "duplicate key"},
		{"negative", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}\n"), "non-negative"},
		{"int not tuple", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (3)}\n"), "not a tuple"},
		{"huge shape", hdr("{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4)}\n"), "too many elements"},
		{"big claim short data", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,)}\n"), "unexpected EOF"},
		{"trailing", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': ()} x\n"), "trailing"},
		{"header too long", []byte("\x93NUMPY\x02\x00\xff\xff\xff\x7f"), "exceeds the limit"},
		{"non-ascii v1", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (), '\xc3\xa9': 1}\n"), "not ASCII"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tc.in))
			if err == nil {
				t.Fatalf("want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	f32, _ := NewFloat32([]int{2, 2}, []float32{1, float32(math.Inf(-1)), -0, 3.5})
	f64, _ := NewFloat64([]int{3}, []float64{math.Pi, -1e300, 5e-324})
	i64, _ := NewInt64([]int{1, 2}, []int64{math.MinInt64, math.MaxInt64})
	u8, _ := NewUint8([]int{2, 1, 1}, []uint8{0, 255})
	scalar, _ := NewFloat32(nil, []float32{7})
	empty, _ := NewFloat32([]int{0}, nil)
	many := make([]int, 40) // header long enough to need padding over several blocks
	for i := range many {
		many[i] = 1
	}
	deep, _ := NewFloat32(many, []float32{1})
	for name, a := range map[string]*Array{"f32": f32, "f64": f64, "i64": i64, "u8": u8, "scalar": scalar, "empty": empty, "deep": deep} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, a); err != nil {
				t.Fatal(err)
			}
			hlen := int(buf.Bytes()[8]) | int(buf.Bytes()[9])<<8
			if (10+hlen)%64 != 0 {
				t.Errorf("data offset %d is not a multiple of 64", 10+hlen)
			}
			got, err := Read(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if got.DType != a.DType || !slices.Equal(got.Shape, a.Shape) || !bytes.Equal(got.data, a.data) {
				t.Fatalf("round trip: got %s %v, want %s %v", got.DType, got.Shape, a.DType, a.Shape)
			}
			if buf.Len() != 0 {
				t.Fatalf("%d bytes left unread", buf.Len())
			}
		})
	}
}

// TestNumPyReadsOurs checks that NumPy itself loads what Write produces.
func TestNumPyReadsOurs(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3 with numpy on this machine")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "a.npy")
	a, _ := NewFloat32([]int{2, 3}, []float32{1, 2, 3, 4, 5, 6.5})
	if err := WriteFile(path, a); err != nil {
		t.Fatal(err)
	}
	out, err := runPython(py, "import numpy as np,sys; a=np.load(sys.argv[1]); print(a.dtype, a.shape, a.sum())", path)
	if err != nil {
		t.Skipf("python/numpy unavailable: %v", err)
	}
	if want := "float32 (2, 3) 21.5"; strings.TrimSpace(out) != want {
		t.Fatalf("numpy read %q, want %q", out, want)
	}
}

func TestWriteErrors(t *testing.T) {
	if _, err := NewFloat32([]int{2, 2}, make([]float32, 3)); err == nil {
		t.Error("NewFloat32 with 3 elements for shape [2 2]: want error")
	}
	if _, err := NewFloat32([]int{-1}, nil); err == nil {
		t.Error("negative shape: want error")
	}
	if err := Write(io.Discard, &Array{DType: "<c8"}); err == nil {
		t.Error("unsupported dtype: want error")
	}
	if err := Write(io.Discard, nil); err == nil {
		t.Error("nil array: want error")
	}
}

func TestReadSequential(t *testing.T) {
	var buf bytes.Buffer
	for i := 0; i < 3; i++ {
		if err := WriteFloat32(&buf, []int{1}, []float32{float32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		a, err := Read(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if v := a.Float32s()[0]; v != float32(i) {
			t.Fatalf("array %d = %v", i, v)
		}
	}
	if _, err := Read(&buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("after the last array: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestSharedFixtures reads the diffusers fixtures when they are present.
func TestSharedFixtures(t *testing.T) {
	dir := filepath.Join("..", "..", "shared", "fixtures")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("shared fixtures not found at %s (they live outside the repository)", dir)
	}
	tests := []struct {
		file  string
		dtype DType
		shape []int
	}{
		{"diffusers-unet-small/x.npy", Float32, []int{2, 1, 32, 32}},
		{"diffusers-unet-small/out_f64.npy", Float64, []int{2, 1, 32, 32}},
		{"diffusers-unet-small/timesteps.npy", Int64, []int{2}},
		{"diffusers-scheduler/ddpm_linear_betas.npy", Float32, []int{1000}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			a, err := ReadFile(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if a.DType != tc.dtype || !reflect.DeepEqual(a.Shape, tc.shape) {
				t.Fatalf("got %s %v, want %s %v", a.DType, a.Shape, tc.dtype, tc.shape)
			}
		})
	}
	a, err := ReadFile(filepath.Join(dir, "diffusers-unet-small/timesteps.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := a.Int64s()
	if err != nil || !reflect.DeepEqual(ts, []int64{10, 500}) {
		t.Fatalf("timesteps = %v, %v; want [10 500]", ts, err)
	}
}
