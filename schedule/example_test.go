package schedule_test

import (
	"fmt"

	"github.com/ddpm-go/ddpm/schedule"
)

func ExampleNew() {
	s, err := schedule.New(schedule.Spec{Kind: schedule.Linear, T: 1000})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("T=%d alphabar_999=%.3g betatilde_487=%.4f\n", s.T(), s.AlphasCumprod[999], s.PosteriorVariance[487])
	// Output: T=1000 alphabar_999=4.04e-05 betatilde_487=0.0098
}

func ExampleSchedule_Respace() {
	s := schedule.MustNew(schedule.Spec{Kind: schedule.Cosine, T: 1000})
	use, _ := schedule.SectionTimesteps(1000, "ddim5")
	r, _ := s.Respace(use)
	fmt.Println(r.T(), r.Timesteps)
	// Output: 5 [0 200 400 600 800]
}
