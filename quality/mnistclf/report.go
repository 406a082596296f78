package mnistclf

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

// ClassStats counts the images of one intended class and how many the
// classifier read as that class.
type ClassStats struct {
	N       int `json:"n"`
	Correct int `json:"correct"`
}

// Accuracy is Correct/N, or 0 when N is 0.
func (s ClassStats) Accuracy() float64 {
	if s.N == 0 {
		return 0
	}
	return float64(s.Correct) / float64(s.N)
}

// Report scores images labelled by the class they were meant to show (for
// example samples from `ddpm sample --class K`).
type Report struct {
	PerClass  [NumClasses]ClassStats      `json:"per_class"`
	Confusion [NumClasses][NumClasses]int `json:"confusion"` // [intended][predicted]
	Total     ClassStats                  `json:"total"`
}

// Add merges o into r.
func (r *Report) Add(o Report) {
	for k := range NumClasses {
		r.PerClass[k].N += o.PerClass[k].N
		r.PerClass[k].Correct += o.PerClass[k].Correct
		for j := range NumClasses {
			r.Confusion[k][j] += o.Confusion[k][j]
		}
	}
	r.Total.N += o.Total.N
	r.Total.Correct += o.Total.Correct
}

// String formats the per-class and overall accuracy as a table, followed
// by the most frequent wrong reading of each class.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-6s %6s %8s %9s  %s\n", "class", "n", "correct", "accuracy", "most common error")
	for k, s := range r.PerClass {
		if s.N == 0 {
			continue
		}
		worst, wn := -1, 0
		for j, n := range r.Confusion[k] {
			if j != k && n > wn {
				worst, wn = j, n
			}
		}
		errs := "-"
		if worst >= 0 {
			errs = fmt.Sprintf("%d (%d)", worst, wn)
		}
		fmt.Fprintf(&b, "%-6d %6d %8d %8.1f%%  %s\n", k, s.N, s.Correct, 100*s.Accuracy(), errs)
	}
	fmt.Fprintf(&b, "%-6s %6d %8d %8.1f%%\n", "all", r.Total.N, r.Total.Correct, 100*r.Total.Accuracy())
	return b.String()
}

// Score classifies the batch (see Logits for shapes) and counts, per
// intended class (intended[n] in 0..9 for image n), how many images were
// read as that class.
func (c *Classifier) Score(b diffusion.Batch, intended []int) (Report, error) {
	if len(intended) != b.N {
		return Report{}, fmt.Errorf("mnistclf: %d intended classes for %d images", len(intended), b.N)
	}
	for n, k := range intended {
		if k < 0 || k >= NumClasses {
			return Report{}, fmt.Errorf("mnistclf: intended class %d of image %d: allowed 0..9", k, n)
		}
	}
	pred, err := c.Predict(b)
	if err != nil {
		return Report{}, err
	}
	var r Report
	for n, k := range intended {
		r.PerClass[k].N++
		r.Total.N++
		r.Confusion[k][pred[n]]++
		if pred[n] == k {
			r.PerClass[k].Correct++
			r.Total.Correct++
		}
	}
	return r, nil
}

// ReadPNGDir reads every .png file directly in dir (sorted by name) as a
// grayscale (N, 1, S, S) batch in [-1, 1], where S (28 or 32) is the size of
// the first image; every image must be S×S. RGB images are converted to luma.
func ReadPNGDir(dir string) (diffusion.Batch, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return diffusion.Batch{}, nil, fmt.Errorf("mnistclf: %w", err)
	}
	var paths []string
	for _, e := range entries {
		if !e.IsDir() && strings.EqualFold(filepath.Ext(e.Name()), ".png") {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(paths)
	if len(paths) == 0 {
		return diffusion.Batch{}, nil, fmt.Errorf("mnistclf: no .png files in %s", dir)
	}
	var b diffusion.Batch
	for n, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return diffusion.Batch{}, nil, fmt.Errorf("mnistclf: %w", err)
		}
		im, err := img.DecodeImage(f)
		f.Close()
		if err != nil {
			return diffusion.Batch{}, nil, fmt.Errorf("mnistclf: %s: %w", p, err)
		}
		w, h := im.Bounds().Dx(), im.Bounds().Dy()
		if n == 0 {
			if w != h || (w != 28 && w != 32) {
				return diffusion.Batch{}, nil, fmt.Errorf("mnistclf: %s is %dx%d: want 28x28 or 32x32", p, w, h)
			}
			b = diffusion.NewBatch(len(paths), 1, h, w)
		}
		if w != b.W || h != b.H {
			return diffusion.Batch{}, nil, fmt.Errorf("mnistclf: %s is %dx%d, the first image is %dx%d", p, w, h, b.W, b.H)
		}
		u, err := img.Fit(im, 1, h, w)
		if err != nil {
			return diffusion.Batch{}, nil, fmt.Errorf("mnistclf: %s: %w", p, err)
		}
		for i, v := range u {
			b.Data[n*h*w+i] = img.FromUint8(v)
		}
	}
	return b, paths, nil
}
