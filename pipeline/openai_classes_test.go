package pipeline

import (
	"context"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/adm"
	"github.com/ddpm-go/ddpm/diffusion"
)

// TestOpenAINumClasses: a class-conditional guided-diffusion model has
// the num_classes of its config (ddpm's extension), adm.NumClasses
// (ImageNet's 1000) without one; labels past num_classes are refused.
func TestOpenAINumClasses(t *testing.T) {
	const flags = "--image_size 8 --num_channels 32 --num_res_blocks 1 --channel_mult 1 --attention_resolutions 8 --num_heads 2 --class_cond True"
	for _, c := range []struct {
		extra string
		want  int
	}{
		{"", adm.NumClasses},
		{" --num_classes 10", 10},
	} {
		p := openTiny(t, flags+c.extra, 1)
		if got := p.Classes(); got != c.want {
			t.Errorf("flags %q: Classes() = %d, want %d", c.extra, got, c.want)
		}
	}
	p := openTiny(t, flags+" --num_classes 10", 1)
	x := diffusion.NewBatch(1, 3, 8, 8)
	if _, err := p.Model.Predict(context.Background(), x, []float64{10}, []int{9}); err != nil {
		t.Errorf("label 9 of 10: %v", err)
	}
	_, err := p.Diffusion.Sample(context.Background(), p.Model, diffusion.Options{Steps: 1, N: 1, C: 3, H: 8, W: 8, Labels: []int{10}})
	if err == nil || !strings.Contains(err.Error(), "0..9") {
		t.Errorf("label 10 of 10 classes: err %v, want a range error", err)
	}
}
