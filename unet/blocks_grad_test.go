package unet

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/ddpm-go/ddpm/nn"
)

// blockCase builds one block of the model from its inputs in0, in1, ...
type blockCase struct {
	name   string
	cfg    func(*Config)
	in     [][]int
	onehot int // index of an input that holds one-hot labels (not differentiated), or -1
	build  func(u *unetBuilder[[]float32], in []*G.Node) *G.Node
}

// TestBlockGradientsFiniteDifference checks every block's gradient with
// respect to its inputs AND its parameters (nn.Net.VJP with a random seed
// R, so L = sum(out * R)) against central finite differences of its
// forward pass (float32 graph, float64 sums).
func TestBlockGradientsFiniteDifference(t *testing.T) {
	cases := []blockCase{
		{name: "ResnetBlock2D/shortcut", in: [][]int{{2, 4, 4, 4}, {2, 16}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node { return u.resnet("r", in[0], in[1], 8) }},
		{name: "ResnetBlock2D/identity", in: [][]int{{2, 8, 4, 4}, {2, 16}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node { return u.resnet("r", in[0], in[1], 8) }},
		{name: "Attention/1head", in: [][]int{{2, 8, 3, 3}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node { return u.attention("a", in[0], 8) }},
		{name: "Attention/2heads", cfg: func(c *Config) { d := 4; c.AttentionHeadDim = &d }, in: [][]int{{2, 8, 3, 3}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node { return u.attention("a", in[0], 8) }},
		{name: "Downsample2D/pad0", in: [][]int{{2, 4, 6, 6}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node { return u.downsample("d", in[0]) }},
		{name: "Downsample2D/pad1", cfg: func(c *Config) { c.DownsamplePadding = 1 }, in: [][]int{{2, 4, 6, 6}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node { return u.downsample("d", in[0]) }},
		{name: "Upsample2D", in: [][]int{{2, 4, 3, 3}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node {
				return u.b.Conv("u", u.b.Upsample2x(in[0]), 4, 3, 1, 1)
			}},
		{name: "Concat+GroupNormSiLU", in: [][]int{{2, 4, 3, 3}, {2, 8, 3, 3}}, onehot: -1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node {
				return u.norm("n", u.b.Concat(in[0], in[1]), true)
			}},
		{name: "TimestepEmbedding+class", in: [][]int{{3, 8}, {3, 4}}, onehot: 1,
			build: func(u *unetBuilder[[]float32], in []*G.Node) *G.Node {
				b := u.b
				e := b.Linear("time_embedding.linear_1", in[0], 16)
				e = b.Linear("time_embedding.linear_2", b.SiLU(e), 16)
				return b.SiLU(b.Add(e, b.Embed("class_embedding.weight", in[1], 16)))
			}},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkBlock(t, tc, uint64(ci)) })
	}
}

func checkBlock(t *testing.T, tc blockCase, seed uint64) {
	cfg := tinyConfig()
	if tc.cfg != nil {
		tc.cfg(&cfg)
	}
	r := rand.New(rand.NewPCG(seed, 9))
	names := make([]string, len(tc.in))
	for i := range tc.in {
		names[i] = "in" + string(rune('0'+i))
	}
	build := func(b *nn.Builder[[]float32], _ nn.Key) (*G.Node, error) {
		ins := make([]*G.Node, len(tc.in))
		for i, s := range tc.in {
			ins[i] = b.Input(names[i], s...)
		}
		return tc.build(&unetBuilder[[]float32]{cfg: cfg, b: b}, ins), b.Err()
	}
	net, err := nn.New[[]float32](newCPU(t), build, nn.Key{}, seed)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string][]float32{}
	var wrt []string
	for i, s := range tc.in {
		n := 1
		for _, d := range s {
			n *= d
		}
		v := make([]float32, n)
		if i == tc.onehot {
			for row := 0; row < s[0]; row++ {
				v[row*s[1]+r.IntN(s[1])] = 1
			}
		} else {
			for j := range v {
				v[j] = float32(r.NormFloat64())
			}
			wrt = append(wrt, names[i])
		}
		in[names[i]] = v
	}
	ctx := context.Background()
	out := make([]float32, blockOutSize(t, net, in))
	R := make([]float32, len(out))
	for i := range R {
		R[i] = float32(r.NormFloat64())
	}
	loss := func() float64 {
		if err := net.Forward(ctx, nn.Key{}, in, out); err != nil {
			t.Fatal(err)
		}
		var s float64
		for i, v := range out {
			s += float64(v) * float64(R[i])
		}
		return s
	}
	inGrads, err := net.VJP(ctx, nn.Key{}, in, R, wrt, true)
	if err != nil {
		t.Fatal(err)
	}
	pg, _ := net.GradBuffer()
	pgrad := append([]float32(nil), pg...)
	flat := make([]float32, net.NumParams())
	net.ReadParams(flat)
	check := func(what string, data []float32, grad []float32, set func()) {
		for k := 0; k < 4; k++ {
			i := r.IntN(len(data))
			old := data[i]
			const h = 1e-2
			data[i] = old + h
			set()
			lp := loss()
			data[i] = old - h
			set()
			lm := loss()
			data[i] = old
			set()
			fd := (lp - lm) / (2 * h)
			g := float64(grad[i])
			if math.Abs(g-fd) > 2e-3+3e-2*math.Max(math.Abs(g), math.Abs(fd)) {
				t.Errorf("d/d %s[%d]: gradient %.6g, finite difference %.6g", what, i, g, fd)
			}
		}
	}
	for _, name := range wrt {
		check(name, in[name], inGrads[name], func() {})
	}
	params := net.Params()
	if len(params) == 0 {
		t.Fatal("block has no parameters")
	}
	for _, p := range params {
		check(p.Name, flat[p.Offset:p.Offset+p.Size], pgrad[p.Offset:p.Offset+p.Size], func() { net.WriteParams(flat) })
	}
	t.Logf("%d inputs and %d parameter tensors checked", len(wrt), len(params))
}

// blockOutSize finds the output size of a block net from its VJP seed
// requirement: the forward pass reports the size it needs.
func blockOutSize(t *testing.T, net *nn.Net[[]float32], in map[string][]float32) int {
	t.Helper()
	n, err := net.OutputSize(nn.Key{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
