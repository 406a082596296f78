package train_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/train"
	"github.com/ddpm-go/ddpm/weights"
)

// tinyClassifier is a one-level noisy classifier of 8x8 one-channel
// images into 2 classes.
func tinyClassifier(t *testing.T) *adm.Model {
	t.Helper()
	cfg, err := adm.ParseFlags("--image_size 8 --in_channels 1 --num_classes 2 --classifier_width 64 --classifier_depth 1 " +
		"--classifier_channel_mult 1 --classifier_attention_resolutions 8 --classifier_pool attention")
	if err != nil {
		t.Fatal(err)
	}
	m, err := adm.New(cfg, newCPU(t), 7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// TestClassifierTrains trains a noisy classifier on blobs: the logged
// cross-entropy falls from ln 2, the logged accuracy rises, the trained
// network labels lightly noised blobs correctly, and the checkpoint keeps
// the classifier's config and the diffusion it was trained under.
func TestClassifierTrains(t *testing.T) {
	dir := t.TempDir()
	m := tinyClassifier(t)
	tr := configure(t, &train.Trainer[[]float32]{Net: m, Classify: true}, dir, 80)
	tr.Options.LabelDropout, tr.Options.Timesteps, tr.Options.Batch = 0, train.Uniform, 16
	if err := tr.Run(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var loss, acc []float64
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var rec struct{ Loss, Accuracy float64 }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		loss, acc = append(loss, rec.Loss), append(acc, rec.Accuracy)
	}
	first, last := mean(loss[:10]), mean(loss[len(loss)-10:])
	t.Logf("cross-entropy %.3f -> %.3f, batch accuracy %.2f -> %.2f", first, last, mean(acc[:10]), mean(acc[len(acc)-10:]))
	if !(last < 0.75*first) || !(mean(acc[len(acc)-10:]) > mean(acc[:10])) {
		t.Errorf("the classifier did not learn")
	}

	// The trained weights classify blobs noised to t = 50.
	ds := blobs(t)
	x, y := diffusion.NewBatch(32, 1, 8, 8), make([]int, 32)
	for i := range 32 {
		label, err := ds.Example(i, x.Data[i*64:(i+1)*64])
		if err != nil {
			t.Fatal(err)
		}
		y[i] = label
	}
	noise := diffusion.NewBatch(32, 1, 8, 8)
	for i := range noise.Data {
		noise.Data[i] = float32((i*7919)%13-6) / 6
	}
	ts := make([]int, 32)
	tf := make([]float64, 32)
	for i := range ts {
		ts[i], tf[i] = 50, 50
	}
	xt, err := tr.Diffusion.QSample(x, noise, ts)
	if err != nil {
		t.Fatal(err)
	}
	logits, err := m.Logits(context.Background(), xt, tf)
	if err != nil {
		t.Fatal(err)
	}
	right := 0
	for i, label := range y {
		if (logits[2*i+1] > logits[2*i]) == (label == 1) {
			right++
		}
	}
	if right < 30 {
		t.Errorf("%d of 32 noised blobs classified right, want >= 30", right)
	}
	c, err := weights.ReadCheckpoint(tr.CheckpointPath())
	if err != nil {
		t.Fatal(err)
	}
	if !adm.IsConfig(c.UNetConfig) || len(c.DiffusionConfig) == 0 {
		t.Errorf("checkpoint configs: %s / %s", c.UNetConfig, c.DiffusionConfig)
	}
}

// TestClassifierChecks: a classifier run refuses what does not apply.
func TestClassifierChecks(t *testing.T) {
	for name, set := range map[string]func(o *train.Options){
		"label_dropout": func(o *train.Options) { o.LabelDropout = 0.1 },
		"timesteps":     func(o *train.Options) { o.Timesteps = train.LossSecondMoment },
	} {
		tr := configure(t, &train.Trainer[[]float32]{Net: tinyClassifier(t), Classify: true}, t.TempDir(), 2)
		tr.Options.LabelDropout, tr.Options.Timesteps = 0, train.Uniform
		set(&tr.Options)
		if err := tr.Run(context.Background(), false); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
