package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/ddpm-go/ddpm/data"
	"github.com/ddpm-go/ddpm/quality"
	"github.com/ddpm-go/ddpm/quality/mnistclf"
)

const fidExamples = `  for k in 0 1 2 3 4 5 6 7 8 9; do ddpm sample --class $k --n 100 --out-dir gen/$k; done
  ddpm fid gen                        # 1000 digits by class: Frechet distance, its floor, accuracy
  ddpm fid --dataset fashion-mnist --json flat-folder-of-pngs`

// runFid scores a folder of generated digits with the MNIST classifier of
// package quality: the Fréchet distance of its penultimate features
// against a dataset split, the same distance for as many real training
// digits (the floor), and, when the folder has subfolders 0..9, how often
// each image is read as its folder's class.
func runFid(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fid", "fid [--dataset mnist] [--split test] [--json] DIR", fidExamples, stderr)
	dataset := fs.String("dataset", "mnist", "reference dataset: mnist or fashion-mnist (the classifier is MNIST's: for other data the distance is only comparative)")
	split := fs.String("split", "test", "reference split: test or train")
	seed := fs.Uint64("seed", 0, "seed of the random real subset for the floor")
	asJSON := fs.Bool("json", false, "print one JSON object")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError{fmt.Sprintf("fid: want one DIR of generated PNGs, got %d arguments", len(pos))}
	}
	var sp data.Split
	if err := sp.Set(*split); err != nil {
		return usageError{fmt.Sprintf("fid: --split %q: allowed train, test", *split)}
	}
	gen, labels, err := quality.ReadDigits(pos[0])
	if err != nil {
		return err
	}
	open := func(s data.Split) (data.Dataset, error) {
		return data.Open(ctx, *dataset, data.Options{Split: s, Size: gen.H, Resize: data.ResizePad})
	}
	ref, err := open(sp)
	if err != nil {
		return err
	}
	floorSet, err := open(data.Train)
	if err != nil {
		return err
	}
	c, err := mnistclf.Pretrained()
	if err != nil {
		return err
	}
	s, err := quality.ScoreDigits(ctx, c, gen, labels, ref, *dataset+" "+*split, floorSet, *seed)
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.Marshal(s)
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	fmt.Fprintf(stdout, "%d images against %s (%d): Frechet distance %.3f (real-digit floor at %d: %.3f, ratio %.2f)\n",
		s.N, s.Reference, s.RefN, s.FD, s.N, s.Floor, s.FD/s.Floor)
	if s.Report != nil {
		fmt.Fprint(stdout, s.Report.String())
	}
	return nil
}
