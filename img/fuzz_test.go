package img

import (
	"bytes"
	"image"
	"image/png"
	"testing"
)

// FuzzDecode checks that untrusted bytes never panic the decoder and that a
// successful decode has the requested shape.
func FuzzDecode(f *testing.F) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 3, 5))); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xd8, 0xff, 0xe0})
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Decode(bytes.NewReader(data), 3, 4, 4)
		if err != nil {
			return
		}
		if b.N != 1 || b.C != 3 || b.H != 4 || b.W != 4 || len(b.Data) != 48 {
			t.Fatalf("shape %+v", b)
		}
	})
}
