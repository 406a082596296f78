package diffusion

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
)

// The training tables are diffusers' float32 tables bit for bit.
func TestSchedTablesMatchDiffusers(t *testing.T) {
	dir := fixtures.Dir(t, "diffusers-scheduler")
	for _, tc := range []struct {
		schedule, betas, ac string
	}{
		{"linear", "ddpm_linear_betas.npy", "ddpm_linear_alphas_cumprod.npy"},
		{"squaredcos_cap_v2", "cos_betas.npy", "cos_alphas_cumprod.npy"},
	} {
		t.Run(tc.schedule, func(t *testing.T) {
			c, err := SchedulerConfig{ClassName: ClassDDPM, BetaSchedule: tc.schedule}.resolve()
			if err != nil {
				t.Fatal(err)
			}
			tab := newTrainTables(&c)
			for _, kv := range []struct {
				file string
				got  []float64
			}{{tc.betas, tab.betas}, {tc.ac, tab.ac}} {
				want := schedNpy(t, filepath.Join(dir, kv.file)).Float64s()
				bad := 0
				for i := range want {
					if kv.got[i] != want[i] {
						if bad < 5 {
							t.Errorf("%s[%d] = %.9g, want %.9g (float32 bit-exact)", kv.file, i, kv.got[i], want[i])
						}
						bad++
					}
				}
				if bad > 0 {
					t.Errorf("%s: %d of %d entries differ", kv.file, bad, len(want))
				}
			}
		})
	}
}

func TestSchedSpacing(t *testing.T) {
	for _, tc := range []struct {
		spacing string
		T, n, o int
		want    []int
	}{
		{"leading", 1000, 10, 0, []int{900, 800, 700, 600, 500, 400, 300, 200, 100, 0}},
		{"leading", 1000, 10, 1, []int{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}},
		{"linspace", 1000, 4, 0, []int{999, 666, 333, 0}},
		{"trailing", 1000, 4, 0, []int{999, 749, 499, 249}},
		{"trailing", 1000, 3, 0, []int{999, 666, 332}},
	} {
		if got := spacedInts(tc.spacing, tc.T, tc.n, tc.o); !slices.Equal(got, tc.want) {
			t.Errorf("spacedInts(%s, %d, %d, %d) = %v, want %v", tc.spacing, tc.T, tc.n, tc.o, got, tc.want)
		}
	}
	// DPM-Solver's n+1 linspace, first point dropped: round half to even.
	if got, want := spacedIntsPlusOne("linspace", 1000, 1000, 10, 0), []int{999, 899, 799, 699, 599, 500, 400, 300, 200, 100}; !slices.Equal(got, want) {
		t.Errorf("spacedIntsPlusOne linspace = %v, want %v", got, want)
	}
	// torch.linspace float32 keeps both ends exactly.
	b := torchLinspace32(1e-4, 0.02, 1000)
	if b[0] != f32(1e-4) || b[999] != f32(0.02) {
		t.Errorf("linspace ends %v %v", b[0], b[999])
	}
	if math.IsNaN(npInterp(0.5, []float64{0, 1})) || npInterp(0.5, []float64{0, 1}) != 0.5 {
		t.Errorf("npInterp")
	}
}
