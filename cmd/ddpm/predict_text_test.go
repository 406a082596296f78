package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/npy"
)

// TestPredictGLIDE runs `ddpm predict --prompt ...` on the shared GLIDE
// fixtures (glide-text2im's Text2ImUNet and InpaintText2ImUNet) and
// compares with OpenAI's output (relative L2 error < 1e-4).
func TestPredictGLIDE(t *testing.T) {
	root := filepath.Join("..", "..", "..", "shared", "fixtures", "openai-small")
	for _, name := range []string{"glide", "glide-inpaint"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(root, name)
			if _, err := os.Stat(dir); err != nil {
				t.Skipf("GLIDE fixture not found at %s (it lives in the project's shared/ folder): %v", dir, err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, "prompts.json"))
			if err != nil {
				t.Fatal(err)
			}
			var prompts []string
			if err := json.Unmarshal(raw, &prompts); err != nil {
				t.Fatal(err)
			}
			ta, err := npy.ReadFile(filepath.Join(dir, "timesteps.npy"))
			if err != nil {
				t.Fatal(err)
			}
			ts, err := ta.Int64s()
			if err != nil {
				t.Fatal(err)
			}
			var tsArg []string
			for _, v := range ts {
				tsArg = append(tsArg, strconv.FormatInt(v, 10))
			}
			out := filepath.Join(t.TempDir(), "out.npy")
			args := []string{"predict", "--model", filepath.Join(dir, "model.pt"), "--device", "cpu", "--input", filepath.Join(dir, "x.npy"),
				"--timesteps", strings.Join(tsArg, ","), "--output", out}
			for _, p := range prompts {
				args = append(args, "--prompt", p)
			}
			if name == "glide-inpaint" {
				args = append(args, "--inpaint-image", filepath.Join(dir, "inpaint_image.npy"), "--inpaint-mask", filepath.Join(dir, "inpaint_mask.npy"))
			}
			var so, se bytes.Buffer
			if err := run(context.Background(), args, &so, &se); err != nil {
				t.Fatalf("predict: %v\n%s", err, se.String())
			}
			e := relL2NPY(t, out, filepath.Join(dir, "out.npy"))
			t.Logf("%s: relative L2 %.3g", name, e)
			if e > 1e-4 {
				t.Fatalf("relative L2 error against glide-text2im = %.3g", e)
			}
			// Without prompts, or with the wrong number, usage errors.
			for _, bad := range []struct {
				extra []string
				want  string
			}{{nil, "--prompt"}, {[]string{"--prompt", "a", "--prompt", "b", "--prompt", "c"}, "3 prompts"}, {[]string{"--prompt", "a", "--class", "1"}, "--class"}} {
				base := args[:11] // up to --output OUT
				err := run(context.Background(), append(append([]string{}, base...), bad.extra...), &so, &se)
				if err == nil || !strings.Contains(err.Error(), bad.want) {
					t.Errorf("%v: error %v, want one mentioning %q", bad.extra, err, bad.want)
				}
			}
		})
	}
}
