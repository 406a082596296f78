package pt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
)

// TestOpenAISmall reads the four model.pt files of the shared openai-small
// fixtures (OpenAI's guided-diffusion and GLIDE code, saved with
// torch.save) and checks every tensor's name, order, dtype and shape, and a
// SHA-256 of its float32 values, against testdata/openai_small.json, which
// testdata/openai_small.py computed with torch.load.
func TestOpenAISmall(t *testing.T) {
	dir := fixtures.Dir(t, "openai-small")
	b, err := os.ReadFile(filepath.Join("testdata", "openai_small.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string][][]json.RawMessage
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	wantCounts := map[string]int{"adm": 217, "classifier": 133, "glide": 261, "glide-inpaint": 261}
	for model, n := range wantCounts {
		t.Run(model, func(t *testing.T) {
			rows := want[model]
			if len(rows) != n {
				t.Fatalf("openai_small.json has %d tensors for %s, want %d", len(rows), model, n)
			}
			path := filepath.Join(dir, model, "model.pt")
			f, err := OpenFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if len(f.Tensors) != n || len(f.Skipped) != 0 {
				t.Fatalf("%d tensors and %d skipped entries, want %d and 0", len(f.Tensors), len(f.Skipped), n)
			}
			got, err := f.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			var elems int64
			for i, row := range rows {
				var name, dtype, sum string
				var shape []int
				for j, dst := range []any{&name, &dtype, &shape, &sum} {
					if err := json.Unmarshal(row[j], dst); err != nil {
						t.Fatal(err)
					}
				}
				ti := f.Tensors[i]
				if ti.Name != name || dtype != "float32" || ti.DType != "F32" || !reflect.DeepEqual(ti.Shape, shape) {
					t.Fatalf("tensor %d: %s %s %v, want %s %s %v", i, ti.Name, ti.DType, ti.Shape, name, dtype, shape)
				}
				tn := got[name]
				buf := make([]byte, 4*len(tn.Data))
				for k, v := range tn.Data {
					binary.LittleEndian.PutUint32(buf[4*k:], math.Float32bits(v))
				}
				h := sha256.Sum256(buf)
				if hex.EncodeToString(h[:])[:24] != sum || !reflect.DeepEqual(tn.Shape, shape) {
					t.Errorf("%s: values differ from torch.load's (sha256 %s..., want %s)", name, hex.EncodeToString(h[:12]), sum)
				}
				elems += int64(len(tn.Data))
			}
			t.Logf("%s: %d tensors, %d values, all equal to torch.load's", model, n, elems)
		})
	}
}
