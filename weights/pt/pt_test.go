package pt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// expected is testdata/expected.json: what torch.load returns for each
// testdata file (see testdata/README.md).
type expectedTensor struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int   `json:"shape"`
	Bits  []int32 `json:"bits"` // float32 bit patterns of the values
}

func loadExpected(t *testing.T) map[string][]expectedTensor {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string][]expectedTensor
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTestdata reads every testdata checkpoint and compares each tensor's
// name, order, dtype, shape and every value bit for bit with torch.load.
func TestTestdata(t *testing.T) {
	exp := loadExpected(t)
	if len(exp) != 8 {
		t.Fatalf("expected.json has %d files, want 8", len(exp))
	}
	for file, want := range exp {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join("testdata", file)
			f, err := OpenFile(path, IncludeIntegers())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Legacy != (file == "legacy.pt") {
				t.Errorf("Legacy = %v", f.Legacy)
			}
			var names []string
			for _, ti := range f.Tensors {
				names = append(names, ti.Name)
			}
			var wantNames []string
			for _, w := range want {
				wantNames = append(wantNames, w.Name)
			}
			if !reflect.DeepEqual(names, wantNames) {
				t.Fatalf("tensors %q, want %q", names, wantNames)
			}
			got, err := Read(path, IncludeIntegers())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("Read returned %d tensors, want %d", len(got), len(want))
			}
			for _, w := range want {
				g := got[w.Name]
				if g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) {
					t.Errorf("%s: %s %v, want %s %v", w.Name, g.DType, g.Shape, w.DType, w.Shape)
					continue
				}
				if len(g.Data) != len(w.Bits) {
					t.Errorf("%s: %d values, want %d", w.Name, len(g.Data), len(w.Bits))
					continue
				}
				for i, v := range g.Data {
					if int32(math.Float32bits(v)) != w.Bits[i] {
						t.Errorf("%s[%d] = %g, want %g", w.Name, i, v, math.Float32frombits(uint32(w.Bits[i])))
						break
					}
				}
			}
		})
	}
}

// TestIntegersSkippedByDefault: Read leaves integer and bool tensors out
// unless asked, but File.Tensors lists them.
func TestIntegersSkippedByDefault(t *testing.T) {
	got, err := Read(filepath.Join("testdata", "dtypes.pt"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	want := []string{"bf16", "conv.weight", "f16", "f32", "f32_empty", "f32_scalar", "f64"}
	if !reflect.DeepEqual(sortedStrings(names), want) {
		t.Errorf("Read returned %q, want %q", sortedStrings(names), want)
	}
	f, err := OpenFile(filepath.Join("testdata", "dtypes.pt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ti, ok := f.Info("bn.num_batches_tracked")
	if !ok || ti.DType != "I64" || len(ti.Shape) != 0 || ti.IsFloat() {
		t.Errorf("Info(num_batches_tracked) = %+v, %v", ti, ok)
	}
	n, err := f.ReadTensor("bn.num_batches_tracked")
	if err != nil || len(n.Data) != 1 || n.Data[0] != 7 {
		t.Errorf("ReadTensor(num_batches_tracked) = %+v, %v", n, err)
	}
	if _, err := f.ReadTensor("nope"); err == nil {
		t.Error("ReadTensor of a missing name succeeded")
	}
	if s := got["f32_scalar"]; s.Shape == nil || len(s.Shape) != 0 || s.NumElements() != 1 {
		t.Errorf("scalar shape %#v", s.Shape)
	}
}

func sortedStrings(s []string) []string {
	out := append([]string{}, s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestViews checks the index of views.pt: offsets, strides and shared
// storages as torch wrote them.
func TestViews(t *testing.T) {
	f, err := OpenFile(filepath.Join("testdata", "views.pt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cases := []struct {
		name   string
		off    int64
		stride []int64
	}{
		{"base", 0, []int64{6, 1}},
		{"rows", 6, []int64{6, 1}},
		{"cols", 2, []int64{6, 1}},
		{"t", 0, []int64{1, 6}},
		{"every_other", 0, []int64{12, 3}},
		{"elem", 23, []int64{}},
		{"half_t", 1, []int64{1, 4}},
	}
	for _, c := range cases {
		ti, ok := f.Info(c.name)
		if !ok || ti.Offset != c.off || !reflect.DeepEqual(ti.Stride, c.stride) {
			t.Errorf("%s: offset %d stride %v, want %d %v", c.name, ti.Offset, ti.Stride, c.off, c.stride)
		}
		base, _ := f.Info("base")
		if c.name != "half_t" && ti.Storage != base.Storage {
			t.Errorf("%s: storage %q, want base's %q", c.name, ti.Storage, base.Storage)
		}
	}
}

// TestSkipped: non-tensor entries are listed, nested dicts flattened.
func TestSkipped(t *testing.T) {
	f, err := OpenFile(filepath.Join("testdata", "mixed.pt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := []Skipped{{"epoch", "int"}, {"name", "str"}, {"none", "None"}, {"lr", "float"}, {"list", "list"}}
	if !reflect.DeepEqual(f.Skipped, want) {
		t.Errorf("Skipped = %v, want %v", f.Skipped, want)
	}
}

// TestMaxBytes: the cap on returned data applies, and a raised cap works.
func TestMaxBytes(t *testing.T) {
	path := filepath.Join("testdata", "dtypes.pt")
	if _, err := Read(path, MaxBytes(100)); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "MaxBytes") {
		t.Errorf("Read with a 100-byte cap: %v", err)
	}
	if _, err := Read(path, MaxBytes(1<<20)); err != nil {
		t.Error(err)
	}
}

// TestErrors feeds crafted and damaged files: each must fail with an
// error wrapping ErrFormat that says what is wrong.
func TestErrors(t *testing.T) {
	good := zipFile(t, stateDict(6, 0, []int{2, 3}, []int{3, 1}), map[string][]byte{"0": f32Bytes(1, 2, 3, 4, 5, 6)})
	if m, err := ReadFrom(bytes.NewReader(good), int64(len(good))); err != nil || len(m["w"].Data) != 6 || m["w"].Data[5] != 6 {
		t.Fatalf("the crafted base case does not read: %v %v", m, err)
	}
	store := map[string][]byte{"0": f32Bytes(1, 2, 3, 4, 5, 6)}
	withPickle := func(pkl []byte) []byte { return zipFile(t, pkl, store) }
	dict1 := func(body func(p *pk)) []byte {
		p := (&pk{}).proto(2).odict().mark().str("w")
		body(p)
		return withPickle(p.setitems().stop())
	}
	hugeLen := func(op byte, n int) []byte {
		p := (&pk{}).proto(4).op(op)
		if n == 8 {
			p.b = binary.LittleEndian.AppendUint64(p.b, 1<<40)
		} else {
			p.b = binary.LittleEndian.AppendUint32(p.b, 0xfffffff0)
		}
		return withPickle(p.b)
	}
	dtypes, err := os.ReadFile(filepath.Join("testdata", "dtypes.pt"))
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := os.ReadFile(filepath.Join("testdata", "legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"os.system", dict1(func(p *pk) { p.global("os", "system").str("echo hi").op(0x85).reduce() }), "global os.system is not allowed"},
		{"builtins.eval via STACK_GLOBAL", dict1(func(p *pk) { p.short("builtins").short("eval").op(0x93) }), "global builtins.eval is not allowed"},
		{"STACK_GLOBAL via memo", dict1(func(p *pk) {
			p.short("posix").op(0x94).short("system").op(0x94).op('0', '0').op('h', 0, 'h', 1, 0x93)
		}), "global posix.system is not allowed"},
		{"STACK_GLOBAL computed", dict1(func(p *pk) { p.short("os").op('2').op(0x93) }), "not literal strings"},
		{"__builtin__.object", dict1(func(p *pk) { p.global("__builtin__", "object") }), "global __builtin__.object is not allowed"},
		{"copy_reg._reconstructor", dict1(func(p *pk) { p.global("copy_reg", "_reconstructor") }), "global copy_reg._reconstructor"},
		{"complex storage", dict1(func(p *pk) { p.tensor("ComplexFloatStorage", "0", 3, 0, []int{3}, []int{1}) }), "ComplexFloatStorage: storage type not supported"},
		{"INST opcode", dict1(func(p *pk) { p.mark().op('i').op([]byte("os\nsystem\n")...) }), "opcode INST"},
		{"NEWOBJ opcode", dict1(func(p *pk) { p.op(0x81) }), "opcode NEWOBJ"},
		{"opcode 0xff", dict1(func(p *pk) { p.op(0xff) }), "unknown opcode 0xff"},
		{"protocol 6", withPickle((&pk{}).proto(6).stop()), "unsupported pickle protocol 6"},
		{"BINUNICODE 4 GiB", hugeLen('X', 4), "runs past"},
		{"BINBYTES8 1 TiB", hugeLen(0x8e, 8), "runs past"},
		{"BINUNICODE8 1 TiB", hugeLen(0x8d, 8), "runs past"},
		{"FRAME 1 TiB", hugeLen(0x95, 8), "frame of"},
		{"no STOP", withPickle((&pk{}).proto(2).odict().b), "no STOP"},
		{"empty LONG1", dict1(func(p *pk) { p.op(0x8a, 0) }), "integer of 0 bytes"},
		{"DICT odd items", dict1(func(p *pk) { p.mark().int(1).op('d') }), "malformed pickle"},
		{"unhashable key", withPickle((&pk{}).proto(3).odict().mark().op('C', 1, 'x').int(1).setitems().stop()), "malformed pickle"},
		{"storage size lies", zipFile(t, stateDict(1000, 0, []int{2, 3}, []int{3, 1}), store), "its zip entry has 24 bytes"},
		{"view past storage", withPickle(stateDict(6, 4, []int{2, 3}, []int{3, 1})), "reaches past its storage"},
		{"stride past storage", withPickle(stateDict(6, 0, []int{2, 2}, []int{5, 1})), "reaches past its storage"},
		{"shape overflow", withPickle(stateDict(6, 0, []int{1 << 30, 1 << 30, 1 << 30, 1 << 30}, []int{0, 0, 0, 0})), "overflows"},
		{"huge dim", withPickle(stateDict(6, 0, []int{1 << 40}, []int{1})), "exceeds"},
		{"expanded view", withPickle(stateDict(6, 0, []int{1000, 6}, []int{0, 1})), "overlapping or expanded"},
		{"huge numel", zipFile(t, stateDict(1<<62, 0, []int{6}, []int{1}), store), "not a valid size"},
		{"size/stride rank", withPickle(stateDict(6, 0, []int{6}, []int{1, 1})), "size has 1 dimensions, stride 2"},
		{"missing storage", zipFile(t, stateDict(6, 0, []int{6}, []int{1}), nil), "has no zip entry"},
		{"list, not dict", withPickle((&pk{}).proto(2).op(']').stop()), "holds a list, not a state dict"},
		{"torchscript", zipFile(t, stateDict(6, 0, []int{6}, []int{1}), store, "archive/constants.pkl", "x"), "TorchScript"},
		{"bad byteorder", zipFile(t, stateDict(6, 0, []int{6}, []int{1}), store, "archive/byteorder", "middle"), "byteorder"},
		{"no data.pkl", zipFile(t, nil, nil)[:0], "neither a zip"},
		{"truncated zip", dtypes[:len(dtypes)/2], "zip archive"},
		{"truncated zip tail", dtypes[:len(dtypes)-10], "zip archive"},
		{"truncated legacy", legacy[:len(legacy)-20], "truncated"},
		{"legacy cut in pickle", legacy[:300], "truncated"},
		{"plain pickle", (&pk{}).proto(2).odict().stop(), "not one torch.save wrote"},
		{"safetensors", append([]byte{16, 0, 0, 0, 0, 0, 0, 0}, `{"__metadata__":{}}`...), "safetensors"},
		{"random", []byte("hello world, this is not a checkpoint"), "neither a zip"},
		{"empty", nil, "neither a zip"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ReadFrom(bytes.NewReader(c.in), int64(len(c.in)))
			if err == nil {
				t.Fatalf("accepted: %d tensors", len(m))
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error does not wrap ErrFormat: %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

// TestGlobalError: refused globals come back as a *GlobalError naming them.
func TestGlobalError(t *testing.T) {
	p := (&pk{}).proto(2).global("subprocess", "Popen").stop()
	in := zipFile(t, p, nil)
	_, err := ReadFrom(bytes.NewReader(in), int64(len(in)))
	var ge *GlobalError
	if !errors.As(err, &ge) || ge.Module != "subprocess" || ge.Name != "Popen" {
		t.Fatalf("got %v, want a *GlobalError for subprocess.Popen", err)
	}
}

// TestHalfToFloat32 compares the binary16 decoder on all 65536 inputs with
// the definition: (-1)^s * 2^(e-15) * (1 + f/1024), subnormals 2^-14 * f/1024.
func TestHalfToFloat32(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		s, e, fr := h>>15, (h>>10)&0x1f, h&0x3ff
		var want float64
		switch {
		case e == 0x1f && fr == 0:
			want = math.Inf(1)
		case e == 0x1f:
			want = math.NaN()
		case e == 0:
			want = math.Ldexp(float64(fr)/1024, -14)
		default:
			want = math.Ldexp(1+float64(fr)/1024, e-15)
		}
		if s == 1 {
			want = -want
		}
		got := halfToFloat32(uint16(h))
		if math.IsNaN(want) {
			if !math.IsNaN(float64(got)) {
				t.Fatalf("0x%04x: %g, want NaN", h, got)
			}
			continue
		}
		if got != float32(want) || math.Signbit(float64(got)) != (s == 1) {
			t.Fatalf("0x%04x: %g, want %g", h, got, want)
		}
	}
}

// TestGather compares the strided gather with a slow twin that computes
// each element's storage index from its unravelled multi-index, on seeded
// random views (permuted, sliced, broadcast dims of size 1).
func TestGather(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 500; trial++ {
		r := rng.IntN(5)
		shape := make([]int, r)
		stride := make([]int64, r)
		for k := range shape {
			shape[k] = 1 + rng.IntN(4)
			stride[k] = int64(rng.IntN(13))
		}
		if trial%3 == 0 { // make it contiguous
			s := int64(1)
			for k := r - 1; k >= 0; k-- {
				stride[k] = s
				s *= int64(shape[k])
			}
		}
		last, _ := lastElement(0, shape, stride)
		n := 1
		for _, d := range shape {
			n *= d
		}
		src := f32Bytes(make([]float32, last+1)...)
		for i := int64(0); i <= last; i++ {
			binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(float32(i)+0.5))
		}
		// NaN guard band after the output.
		dst := make([]float32, n+4)
		for i := range dst {
			dst[i] = float32(math.NaN())
		}
		gather(dst[:n], src, shape, stride, "F32", binary.LittleEndian)
		for i := 0; i < n; i++ {
			rem, pos := i, int64(0)
			for k := r - 1; k >= 0; k-- {
				pos += int64(rem%shape[k]) * stride[k]
				rem /= shape[k]
			}
			if dst[i] != float32(pos)+0.5 {
				t.Fatalf("shape %v stride %v: element %d = %g, want %g", shape, stride, i, dst[i], float32(pos)+0.5)
			}
		}
		for _, v := range dst[n:] {
			if !math.IsNaN(float64(v)) {
				t.Fatalf("shape %v stride %v: wrote past the output", shape, stride)
			}
		}
	}
}

// TestCrafted covers forms torch 1.13 does not write but other versions
// may: the 7-argument _rebuild_tensor_v2 of torch 2.x (metadata), an
// untyped storage, a plain dict whose key repeats (the last value wins, in
// the first position, as in Python), and int keys in nested dicts.
func TestCrafted(t *testing.T) {
	p := (&pk{}).proto(2).op('}').mark()
	// "a": _rebuild_tensor_v2(storage, 0, (2,), (1,), False, OrderedDict(), {})
	p.str("a").global("torch._utils", "_rebuild_tensor_v2").mark()
	p.storage("FloatStorage", "0", 6).int(0).ints(2).ints(1).op(0x89).odict().op('}').tuple().reduce()
	// "u": a byte tensor on an untyped storage (3 bytes at offset 2).
	p.str("u").global("torch._utils", "_rebuild_tensor_v2").mark()
	p.storage("UntypedStorage", "1", 8).int(2).ints(3).ints(1).op(0x89).odict().tuple().reduce()
	// "a" again: the view at offset 4 replaces the first.
	p.str("a").global("torch._utils", "_rebuild_tensor_v2").mark()
	p.storage("FloatStorage", "0", 6).int(4).ints(2).ints(1).op(0x89).odict().tuple().reduce()
	// "opt": {0: {"m": tensor}}
	p.str("opt").op('}').int(0).op('}').str("m").global("torch._utils", "_rebuild_tensor_v2").mark()
	p.storage("FloatStorage", "0", 6).int(1).ints(1).ints(1).op(0x89).odict().tuple().reduce()
	p.op('s', 's')
	pkl := p.setitems().stop()
	in := zipFile(t, pkl, map[string][]byte{"0": f32Bytes(1, 2, 3, 4, 5, 6), "1": {0, 1, 2, 3, 4, 5, 6, 7}})
	f, err := Open(bytes.NewReader(in), int64(len(in)), IncludeIntegers())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ti := range f.Tensors {
		names = append(names, ti.Name)
	}
	if !reflect.DeepEqual(names, []string{"a", "u", "opt.0.m"}) {
		t.Fatalf("tensors %q", names)
	}
	m, err := f.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := m["a"].Data; !reflect.DeepEqual(got, []float32{5, 6}) {
		t.Errorf("a = %v, want [5 6] (the repeated key's last value)", got)
	}
	if got := m["u"]; got.DType != "U8" || !reflect.DeepEqual(got.Data, []float32{2, 3, 4}) {
		t.Errorf("u = %s %v, want U8 [2 3 4]", got.DType, got.Data)
	}
	if got := m["opt.0.m"].Data; !reflect.DeepEqual(got, []float32{2}) {
		t.Errorf("opt.0.m = %v, want [2]", got)
	}
}
