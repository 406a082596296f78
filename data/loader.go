package data

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/ddpm-go/ddpm/diffusion"
)

// LoaderOptions configures a Loader. The zero value gives plain shuffled
// batches.
type LoaderOptions struct {
	// Flip mirrors each example left-right with probability 1/2 (a random
	// horizontal flip; fine for faces or CIFAR, wrong for digits).
	Flip bool
}

// LoaderState is the position of a Loader, small enough to store in a
// checkpoint as JSON. Restoring it continues with exactly the batches an
// uninterrupted loader would have produced.
type LoaderState struct {
	Seed  uint64 `json:"seed"`
	Len   int    `json:"len"`   // dataset length, checked on restore
	Batch int    `json:"batch"` // batch size, checked on restore
	Epoch int    `json:"epoch"` // epochs completed
	Pos   int    `json:"pos"`   // examples of this epoch already served
}

// Loader draws batches from a dataset without replacement: each epoch visits
// every example once in a permutation drawn from (seed, epoch), and a batch
// that runs past the end of an epoch continues into the next one, so every
// batch is full. The flip of each example is also drawn from (seed, epoch),
// so the sequence of batches depends only on the seed.
type Loader struct {
	ds      Dataset
	batch   int
	seed    uint64
	flip    bool
	c, h, w int

	epoch, pos int
	permEpoch  int // epoch that perm and flips were drawn for; -1 = none
	perm       []int
	flips      []bool
}

// NewLoader returns a loader of batch examples per batch (1..65536; it may
// exceed ds.Len()) over ds, seeded by seed.
func NewLoader(ds Dataset, batch int, seed uint64, opts LoaderOptions) (*Loader, error) {
	if ds == nil || ds.Len() < 1 {
		return nil, fmt.Errorf("data: loader needs a non-empty dataset")
	}
	if batch < 1 || batch > 65536 {
		return nil, fmt.Errorf("data: loader batch=%d: allowed 1..65536", batch)
	}
	c, h, w := ds.Shape()
	return &Loader{ds: ds, batch: batch, seed: seed, flip: opts.Flip, c: c, h: h, w: w, permEpoch: -1}, nil
}

// State returns the loader's position.
func (l *Loader) State() LoaderState {
	return LoaderState{Seed: l.seed, Len: l.ds.Len(), Batch: l.batch, Epoch: l.epoch, Pos: l.pos}
}

// Restore moves the loader to s, a State of a loader over the same dataset
// with the same batch size; the seed is taken from s.
func (l *Loader) Restore(s LoaderState) error {
	if s.Len != l.ds.Len() {
		return fmt.Errorf("data: loader state is for a dataset of %d examples, this one has %d", s.Len, l.ds.Len())
	}
	if s.Batch != l.batch {
		return fmt.Errorf("data: loader state has batch=%d, this loader has batch=%d", s.Batch, l.batch)
	}
	if s.Epoch < 0 || s.Pos < 0 || s.Pos >= s.Len {
		return fmt.Errorf("data: loader state epoch=%d pos=%d: allowed epoch >= 0 and 0 <= pos < %d", s.Epoch, s.Pos, s.Len)
	}
	l.seed, l.epoch, l.pos, l.permEpoch = s.Seed, s.Epoch, s.Pos, -1
	return nil
}

// Epoch is the number of completed passes over the dataset.
func (l *Loader) Epoch() int { return l.epoch }

// Shape is the (N, C, H, W) shape of every batch.
func (l *Loader) Shape() (n, c, h, w int) { return l.batch, l.c, l.h, l.w }

// draw computes the permutation and flips of the current epoch.
func (l *Loader) draw() {
	if l.permEpoch == l.epoch {
		return
	}
	r := rand.New(rand.NewPCG(l.seed, uint64(l.epoch)))
	l.perm = r.Perm(l.ds.Len())
	if l.flip {
		if l.flips == nil {
			l.flips = make([]bool, l.ds.Len())
		}
		for i := range l.flips {
			l.flips[i] = r.Uint64()&1 == 1
		}
	}
	l.permEpoch = l.epoch
}

// Next returns a new batch (N, C, H, W) in [-1, 1] and its labels (len N;
// -1 for an unlabelled dataset).
func (l *Loader) Next(ctx context.Context) (diffusion.Batch, []int, error) {
	x := diffusion.NewBatch(l.batch, l.c, l.h, l.w)
	y := make([]int, l.batch)
	if err := l.NextInto(ctx, x, y); err != nil {
		return diffusion.Batch{}, nil, err
	}
	return x, y, nil
}

// NextInto fills x (shape from Shape) and y (len N) with the next batch,
// reusing their memory. On error the loader's position is unchanged.
func (l *Loader) NextInto(ctx context.Context, x diffusion.Batch, y []int) error {
	if x.N != l.batch || x.C != l.c || x.H != l.h || x.W != l.w || len(x.Data) != x.Len() {
		return fmt.Errorf("data: batch shape (%d,%d,%d,%d) with %d values: loader gives (%d,%d,%d,%d)", x.N, x.C, x.H, x.W, len(x.Data), l.batch, l.c, l.h, l.w)
	}
	if len(y) != l.batch {
		return fmt.Errorf("data: %d labels for batch of %d", len(y), l.batch)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	epoch, pos, permEpoch := l.epoch, l.pos, l.permEpoch
	per := l.c * l.h * l.w
	for n := range l.batch {
		l.draw()
		i := l.perm[l.pos]
		dst := x.Data[n*per : (n+1)*per]
		lab, err := l.ds.Example(i, dst)
		if err != nil {
			l.epoch, l.pos = epoch, pos
			if l.permEpoch != permEpoch {
				l.permEpoch = -1
			}
			return fmt.Errorf("data: loader: %w", err)
		}
		y[n] = lab
		if l.flip && l.flips[l.pos] {
			flipRows(dst, l.w)
		}
		l.pos++
		if l.pos == len(l.perm) {
			l.pos = 0
			l.epoch++
		}
	}
	return nil
}

// flipRows mirrors every row of width w in x left-right, in place.
func flipRows(x []float32, w int) {
	for r := 0; r+w <= len(x); r += w {
		row := x[r : r+w]
		for i, j := 0, w-1; i < j; i, j = i+1, j-1 {
			row[i], row[j] = row[j], row[i]
		}
	}
}

// Read returns examples start..start+n−1 of ds in order as a (n, C, H, W)
// batch and their labels, for evaluation passes that need no shuffling
// (e.g. NLL over the test set in chunks).
func Read(ds Dataset, start, n int) (diffusion.Batch, []int, error) {
	if n < 1 || start < 0 || start+n > ds.Len() {
		return diffusion.Batch{}, nil, fmt.Errorf("data: read examples [%d, %d): allowed within [0, %d) and n >= 1", start, start+n, ds.Len())
	}
	c, h, w := ds.Shape()
	x := diffusion.NewBatch(n, c, h, w)
	y := make([]int, n)
	per := c * h * w
	for i := range n {
		l, err := ds.Example(start+i, x.Data[i*per:(i+1)*per])
		if err != nil {
			return diffusion.Batch{}, nil, fmt.Errorf("data: read: %w", err)
		}
		y[i] = l
	}
	return x, y, nil
}
