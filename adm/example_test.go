package adm_test

import (
	"fmt"

	"github.com/ddpm-go/ddpm/adm"
)

// The flags of a released checkpoint, found by its file name, and the
// same network from the flag string guided-diffusion's README prints.
func ExamplePreset() {
	c, _ := adm.Preset("models/64x64_diffusion.pt")
	fmt.Println(c.Kind, c.ImageSize, c.NumChannels, c.NumResBlocks, c.AttentionResolutions, c.NoiseSchedule)
	f, _ := adm.ParseFlags("--attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --dropout 0.1 --image_size 64 --learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 --num_res_blocks 3 --resblock_updown True --use_new_attention_order True --use_fp16 True --use_scale_shift_norm True")
	fmt.Println(string(f.JSON()) == string(c.JSON()))
	// Output:
	// UNetModel 64 192 3 32,16,8 cosine
	// true
}
