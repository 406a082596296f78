package pt

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// pk builds pickles opcode by opcode for crafted test files, independently
// of the reader (the opcodes are Python's pickle protocol 2/4).
type pk struct{ b []byte }

func (p *pk) op(b ...byte) *pk { p.b = append(p.b, b...); return p }
func (p *pk) proto(v byte) *pk { return p.op(0x80, v) }
func (p *pk) global(mod, name string) *pk {
	p.op('c')
	p.b = append(p.b, mod+"\n"+name+"\n"...)
	return p
}
func (p *pk) str(s string) *pk {
	p.op('X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
	return p
}
func (p *pk) short(s string) *pk { p.op(0x8c, byte(len(s))); p.b = append(p.b, s...); return p }
func (p *pk) int(n int) *pk {
	switch {
	case n >= 0 && n < 256:
		return p.op('K', byte(n))
	case n >= 0 && n < 65536:
		return p.op('M', byte(n), byte(n>>8))
	case n >= math.MinInt32 && n <= math.MaxInt32:
		p.op('J')
		p.b = binary.LittleEndian.AppendUint32(p.b, uint32(int32(n)))
		return p
	}
	p.op(0x8a, 8)
	p.b = binary.LittleEndian.AppendUint64(p.b, uint64(n))
	return p
}
func (p *pk) ints(ns ...int) *pk {
	p.op('(')
	for _, n := range ns {
		p.int(n)
	}
	return p.op('t')
}
func (p *pk) mark() *pk     { return p.op('(') }
func (p *pk) tuple() *pk    { return p.op('t') }
func (p *pk) reduce() *pk   { return p.op('R') }
func (p *pk) stop() []byte  { return p.op('.').b }
func (p *pk) odict() *pk    { return p.global("collections", "OrderedDict").op(')').reduce() }
func (p *pk) setitems() *pk { return p.op('u') }

// storage pushes the persistent id of a storage (zip form) and loads it.
func (p *pk) storage(typ, key string, numel int) *pk {
	return p.mark().str("storage").global("torch", typ).str(key).str("cpu").int(numel).tuple().op('Q')
}

// tensor pushes _rebuild_tensor_v2(storage, off, size, stride, False, OrderedDict()).
func (p *pk) tensor(typ, key string, numel, off int, size, stride []int) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2").mark()
	p.storage(typ, key, numel).int(off).ints(size...).ints(stride...).op(0x89).odict()
	return p.tuple().reduce()
}

// stateDict pickles OrderedDict([(name, tensor)]) for one float32 tensor of
// the given view on a storage "0" of numel elements.
func stateDict(numel, off int, size, stride []int) []byte {
	p := (&pk{}).proto(2).odict().mark().str("w")
	p.tensor("FloatStorage", "0", numel, off, size, stride)
	return p.setitems().stop()
}

// zipFile builds a checkpoint zip: archive/data.pkl, archive/version and
// the given storages (archive/data/<key>), stored uncompressed.
func zipFile(t testing.TB, pkl []byte, storages map[string][]byte, extra ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	add := func(name string, data []byte) {
		f, err := w.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("archive/data.pkl", pkl)
	for _, k := range sortedKeys(storages) {
		add("archive/data/"+k, storages[k])
	}
	add("archive/version", []byte("3\n"))
	for i := 0; i+1 < len(extra); i += 2 {
		add(extra[i], []byte(extra[i+1]))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sortedKeys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

// f32Bytes encodes float32 values little-endian.
func f32Bytes(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}
