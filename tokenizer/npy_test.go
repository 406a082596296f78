package tokenizer

import (
	"encoding/binary"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// readNPY reads a little-endian int64 or bool .npy file (the fixture's
// tokens and mask) as int64 values, in C order.
func readNPY(t *testing.T, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		t.Fatalf("%s: not a .npy file", path)
	}
	var hl, off int
	if b[6] == 1 {
		hl, off = int(binary.LittleEndian.Uint16(b[8:])), 10
	} else {
		hl, off = int(binary.LittleEndian.Uint32(b[8:])), 12
	}
	hdr := string(b[off : off+hl])
	data := b[off+hl:]
	descr := regexp.MustCompile(`'descr':\s*'([^']+)'`).FindStringSubmatch(hdr)
	shape := regexp.MustCompile(`'shape':\s*\(([^)]*)\)`).FindStringSubmatch(hdr)
	if descr == nil || shape == nil || strings.Contains(hdr, "'fortran_order': True") {
		t.Fatalf("%s: unsupported header %q", path, hdr)
	}
	n := 1
	for _, f := range strings.Split(shape[1], ",") {
		if f = strings.TrimSpace(f); f != "" {
			d, _ := strconv.Atoi(f)
			n *= d
		}
	}
	out := make([]int64, n)
	switch descr[1] {
	case "<i8":
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
		}
	case "|b1":
		for i := range out {
			out[i] = int64(data[i])
		}
	default:
		t.Fatalf("%s: dtype %s not supported", path, descr[1])
	}
	return out
}
