package pt

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
)

// TestCostModel checks that the scanner's allocation estimate bounds what
// gopickle really allocates (runtime.MemStats.TotalAlloc, garbage
// included) for pickles made of each kind of cheap, repeatable opcode.
func TestCostModel(t *testing.T) {
	const n = 20000
	rep := func(prefix *pk, unit func(p *pk, i int)) []byte {
		for i := 0; i < n; i++ {
			unit(prefix, i)
		}
		return prefix.op('N', '.').b
	}
	start := func() *pk { return (&pk{}).proto(4) }
	cases := map[string][]byte{
		"MARK":        rep(start(), func(p *pk, _ int) { p.mark() }),
		"EMPTY_DICT":  rep(start(), func(p *pk, _ int) { p.op('}') }),
		"EMPTY_LIST":  rep(start(), func(p *pk, _ int) { p.op(']') }),
		"EMPTY_SET":   rep(start(), func(p *pk, _ int) { p.op(0x8f) }),
		"EMPTY_TUPLE": rep(start(), func(p *pk, _ int) { p.op(')') }),
		"TUPLE1":      rep(start().op('N'), func(p *pk, _ int) { p.op(0x85) }),
		"DUP":         rep(start().op('N'), func(p *pk, _ int) { p.op('2') }),
		"NONE":        rep(start(), func(p *pk, _ int) { p.op('N') }),
		"BININT":      rep(start(), func(p *pk, _ int) { p.op('J', 1, 2, 3, 4) }),
		"BINFLOAT":    rep(start(), func(p *pk, _ int) { p.op('G', 1, 2, 3, 4, 5, 6, 7, 8) }),
		"LONG1":       rep(start(), func(p *pk, _ int) { p.op(0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9) }),
		"SHORT_STR":   rep(start(), func(p *pk, _ int) { p.short("ab") }),
		"BINUNICODE":  rep(start(), func(p *pk, _ int) { p.str(strings.Repeat("x", 100)) }),
		"MEMOIZE":     rep(start().op('N'), func(p *pk, _ int) { p.op(0x94) }),
		"LONG_BINPUT": rep(start().op('N'), func(p *pk, i int) { p.op('r'); p.b = binary.LittleEndian.AppendUint32(p.b, uint32(i)) }),
		"BINGET":      rep(start().op('N', 'q', 0), func(p *pk, _ int) { p.op('h', 0) }),
		"ODICT":       rep(start(), func(p *pk, _ int) { p.odict() }),
		"LIST_APPEND": rep(start().op(']'), func(p *pk, _ int) { p.op('N', 'a') }),
		"DICT_SET":    rep(start().op('}'), func(p *pk, i int) { p.int(i).op('N', 's') }),
		"MARK_TUPLE":  rep(start(), func(p *pk, _ int) { p.mark().op('N', 't') }),
	}
	for name, pkl := range cases {
		t.Run(name, func(t *testing.T) {
			_, cost, err := scanPickleCost(bytes.NewReader(pkl), int64(len(pkl)))
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			if _, err := unpickle(pkl, nil); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			used := int64(after.TotalAlloc - before.TotalAlloc)
			if used > cost {
				t.Errorf("%d bytes of pickle: gopickle allocated %d bytes, the scanner estimated %d", len(pkl), used, cost)
			}
			t.Logf("%s: %d bytes of pickle: allocated %d, estimated %d", name, len(pkl), used, cost)
		})
	}
}

// TestCostLimit: a pickle of two million MARKs (2 MB) is refused before
// gopickle would spend hundreds of MiB on it.
func TestCostLimit(t *testing.T) {
	p := (&pk{}).proto(2)
	p.b = append(p.b, bytes.Repeat([]byte{'('}, 2<<20)...)
	in := zipFile(t, p.stop(), nil)
	_, err := ReadFrom(bytes.NewReader(in), int64(len(in)))
	if err == nil || !strings.Contains(err.Error(), "MiB to unpickle") {
		t.Fatalf("got %v", err)
	}
}
