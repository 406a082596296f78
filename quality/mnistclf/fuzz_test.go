package mnistclf

import (
	"bytes"
	"testing"
)

// FuzzLoad checks that arbitrary bytes never panic Load.
func FuzzLoad(f *testing.F) {
	var buf bytes.Buffer
	New(1).Save(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Load(bytes.NewReader(b))
		if err == nil && len(c.p) != nParam {
			t.Fatalf("loaded %d params", len(c.p))
		}
	})
}
