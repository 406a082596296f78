package weights

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPythonReadsOurs parses a file from Write with an independent reader
// (Python's json and struct modules, NumPy for the data), following the
// safetensors spec rather than this package's code.
func TestPythonReadsOurs(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3 on this machine")
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteFileAtomic(path, sampleFile()); err != nil {
		t.Fatal(err)
	}
	const code = `
import json, struct, sys
import numpy as np
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
assert (8 + n) % 8 == 0, "unaligned"
h = json.loads(b[8:8+n])
meta = h.pop("__metadata__")
data = b[8+n:]
pos = 0
for name, info in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"]):
    s, e = info["data_offsets"]
    assert s == pos, name
    pos = e
    a = np.frombuffer(data[s:e], dtype="<f4").reshape(info["shape"])
    print(name, info["dtype"], list(a.shape), float(a.sum()))
assert pos == len(data)
print(meta["ddpm.note"])
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", code, path).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No module named") {
			t.Skipf("numpy missing: %s", out)
		}
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := `conv.bias F32 [2] inf
conv.weight F32 [2, 1, 3, 3] 22.5
empty F32 [0] 0.0
scalar F32 [] 42.0
unié F32 [1] 3.0
{"a": [1, 2]} <&>
`
	if string(out) != want {
		t.Fatalf("python read:\n%s\nwant:\n%s", out, want)
	}
}
