package weights

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the safetensors reader: it must never
// panic, never allocate beyond the input's size, and anything it accepts
// must survive a Write/Read round trip.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "dtypes.safetensors")); err == nil {
		f.Add(b)
	}
	var buf bytes.Buffer
	if err := Write(&buf, sampleFile()); err == nil {
		f.Add(buf.Bytes())
	}
	f.Add(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}}`, make([]byte, 10)))
	f.Add(build(`{"__metadata__":{"k":"v"}}`, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		file, err := Read(bytes.NewReader(in), int64(len(in)))
		if err != nil {
			return
		}
		total := 0
		for name, tn := range file.Tensors {
			if len(tn.Data) != tn.NumElements() {
				t.Fatalf("%q: %d values for shape %v", name, len(tn.Data), tn.Shape)
			}
			total += len(tn.Data)
		}
		if total > len(in) {
			t.Fatalf("%d values from %d bytes", total, len(in))
		}
		for name, tn := range file.Tensors {
			tn.DType = ""
			file.Tensors[name] = tn
		}
		var out bytes.Buffer
		if err := Write(&out, file); err != nil {
			t.Fatalf("re-encoding an accepted file: %v", err)
		}
		again, err := Read(bytes.NewReader(out.Bytes()), int64(out.Len()))
		if err != nil {
			t.Fatalf("re-reading: %v", err)
		}
		if len(again.Tensors) != len(file.Tensors) || (len(file.Metadata) > 0 && !reflect.DeepEqual(again.Metadata, file.Metadata)) {
			t.Fatal("round trip changed the file")
		}
	})
}

// FuzzOpenModel feeds arbitrary model files (metadata JSON included) to the
// model decoder: errors are fine, panics are not.
func FuzzOpenModel(f *testing.F) {
	mf, err := tinyModel().File()
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, mf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := openModelBytes("fuzz", in)
		if err == nil && len(s.UNetConfig) == 0 {
			t.Fatal("accepted a model without a UNet config")
		}
	})
}

// FuzzParseHubID: any string either parses into a repo that is an
// org/name pair safe to join into a cache path (no "..", no separators
// other than the one slash) and a non-empty revision, or is an error.
func FuzzParseHubID(f *testing.F) {
	for _, s := range []string{"google/ddpm-cifar10-32", "org/name@main", "org/name@refs/pr/1", "a/b@" + strings.Repeat("0", 40),
		"../x", "org/../name", "org/name@", "/abs", "org/name/extra", "", "org/na me", "org/name@../../etc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		repo, rev, err := ParseHubID(id)
		if err != nil {
			return
		}
		org, name, ok := strings.Cut(repo, "/")
		if !ok || org == "" || name == "" || strings.Contains(name, "/") {
			t.Fatalf("ParseHubID(%q) = repo %q: want org/name", id, repo)
		}
		for _, part := range []string{org, name} {
			if part == "." || part == ".." || strings.ContainsAny(part, "\\\x00") {
				t.Fatalf("ParseHubID(%q) = repo %q: unsafe part %q", id, repo, part)
			}
		}
		if rev == "" || strings.Contains(rev, "..") || strings.HasPrefix(rev, "/") {
			t.Fatalf("ParseHubID(%q) = revision %q: unsafe", id, rev)
		}
	})
}
