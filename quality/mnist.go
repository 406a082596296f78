package quality

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/quality/mnistclf"
)

// DigitScore is the quality of a set of generated digits against a real
// split, measured with the MNIST classifier (quality/mnistclf).
type DigitScore struct {
	N int `json:"n"` // generated images scored
	// FD is the Fréchet distance between the generated images' features
	// and the reference split's; Floor is the same distance for N real
	// training digits against the same reference (the estimator's bias at
	// this sample count: a perfect generator scores about Floor).
	FD    float64 `json:"frechet_distance"`
	Floor float64 `json:"floor"`
	// Reference names the split compared against and its size.
	Reference string `json:"reference"`
	RefN      int    `json:"reference_n"`
	// Accuracy is the share read as the asked class (-1 when the classes
	// are unknown); Report holds the per-class detail.
	Accuracy float64          `json:"accuracy"`
	Report   *mnistclf.Report `json:"report,omitempty"`
}

// Features returns the classifier features (N, FeatureDim) of a batch.
func Features(c *mnistclf.Classifier, b diffusion.Batch) ([]float32, error) {
	return c.Features(b)
}

// DatasetStats are the feature statistics of n examples of ds (all when
// n <= 0 or n >= ds.Len(); otherwise a seeded random subset).
func DatasetStats(ctx context.Context, c *mnistclf.Classifier, ds data.Dataset, n int, seed uint64) (Stats, error) {
	idx := make([]int, ds.Len())
	for i := range idx {
		idx[i] = i
	}
	if n > 0 && n < len(idx) {
		r := rand.New(rand.NewPCG(seed, 0x666964))
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		idx = idx[:n]
	}
	ch, h, w := ds.Shape()
	const chunk = 1000
	feats := make([]float32, 0, len(idx)*mnistclf.FeatureDim)
	for lo := 0; lo < len(idx); lo += chunk {
		if err := ctx.Err(); err != nil {
			return Stats{}, err
		}
		part := idx[lo:min(lo+chunk, len(idx))]
		b := diffusion.NewBatch(len(part), ch, h, w)
		per := ch * h * w
		for k, i := range part {
			if _, err := ds.Example(i, b.Data[k*per:(k+1)*per]); err != nil {
				return Stats{}, fmt.Errorf("quality: example %d: %w", i, err)
			}
		}
		f, err := c.Features(b)
		if err != nil {
			return Stats{}, err
		}
		feats = append(feats, f...)
	}
	return NewStats(feats, len(idx), mnistclf.FeatureDim)
}

// ReadDigits reads generated digits from dir: either PNGs directly in dir
// (classes unknown: labels nil) or subfolders named 0..9 holding the
// digits meant to show that class.
func ReadDigits(dir string) (diffusion.Batch, []int, error) {
	var all diffusion.Batch
	var labels []int
	found := false
	for k := range mnistclf.NumClasses {
		sub := filepath.Join(dir, strconv.Itoa(k))
		if st, err := os.Stat(sub); err != nil || !st.IsDir() {
			continue
		}
		b, _, err := mnistclf.ReadPNGDir(sub)
		if err != nil {
			return diffusion.Batch{}, nil, err
		}
		if !found {
			all = diffusion.Batch{C: b.C, H: b.H, W: b.W}
			found = true
		} else if b.H != all.H || b.W != all.W {
			return diffusion.Batch{}, nil, fmt.Errorf("quality: %s holds %dx%d images, earlier folders %dx%d", sub, b.H, b.W, all.H, all.W)
		}
		all.N += b.N
		all.Data = append(all.Data, b.Data...)
		for range b.N {
			labels = append(labels, k)
		}
	}
	if found {
		return all, labels, nil
	}
	b, _, err := mnistclf.ReadPNGDir(dir)
	return b, nil, err
}

// ScoreDigits scores generated digits (labels: the asked class of each,
// or nil) against the reference split ref, with the floor measured on
// floorSet (usually the training split) at the same count.
func ScoreDigits(ctx context.Context, c *mnistclf.Classifier, gen diffusion.Batch, labels []int, ref data.Dataset, refName string, floorSet data.Dataset, seed uint64) (*DigitScore, error) {
	if gen.N < 2 {
		return nil, fmt.Errorf("quality: need at least 2 generated images, have %d", gen.N)
	}
	refStats, err := DatasetStats(ctx, c, ref, 0, seed)
	if err != nil {
		return nil, err
	}
	f, err := c.Features(gen)
	if err != nil {
		return nil, err
	}
	genStats, err := NewStats(f, gen.N, mnistclf.FeatureDim)
	if err != nil {
		return nil, err
	}
	fd, err := FrechetDistance(genStats, refStats)
	if err != nil {
		return nil, err
	}
	floorStats, err := DatasetStats(ctx, c, floorSet, gen.N, seed)
	if err != nil {
		return nil, err
	}
	floor, err := FrechetDistance(floorStats, refStats)
	if err != nil {
		return nil, err
	}
	s := &DigitScore{N: gen.N, FD: fd, Floor: floor, Reference: refName, RefN: ref.Len(), Accuracy: -1}
	if labels != nil {
		rep, err := c.Score(gen, labels)
		if err != nil {
			return nil, err
		}
		s.Report = &rep
		s.Accuracy = rep.Total.Accuracy()
	}
	return s, nil
}
