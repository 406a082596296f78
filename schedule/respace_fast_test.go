package schedule

import (
	"slices"
	"testing"
)

// TestSectionTimestepsFast27 pins GLIDE's "fast27" for T = 1000, worked out
// by hand from glide-text2im's rule: "10,10,3,2,2" splits 0..999 into five
// sections of 200 and takes round(k * 199/(c-1)) (half to even) from each:
//
//	c = 10: stride 22.11: 0 22 44 66 88 111 133 155 177 199 (+0, +200)
//	c = 3:  stride 99.5:  0 100 199 (+400; round(99.5) = 100)
//	c = 2:  stride 199:   0 199 (+600, +800)
//
// then 999 is removed and 997 added.
func TestSectionTimestepsFast27(t *testing.T) {
	want := []int{
		0, 22, 44, 66, 88, 111, 133, 155, 177, 199,
		200, 222, 244, 266, 288, 311, 333, 355, 377, 399,
		400, 500, 599,
		600, 799,
		800, 997,
	}
	got, err := SectionTimesteps(1000, "fast27")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 27 || !slices.Equal(got, want) {
		t.Errorf("SectionTimesteps(1000, fast27) = %v (%d), want %v (27)", got, len(got), want)
	}
	// Surrounding spaces are trimmed as for the other section strings.
	if got2, err := SectionTimesteps(1000, " fast27 "); err != nil || !slices.Equal(got2, want) {
		t.Errorf("SectionTimesteps(1000, \" fast27 \") = %v, %v", got2, err)
	}
	// The smallest T that holds 10 timesteps in every section.
	got, err = SectionTimesteps(50, "fast27")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 27 || got[len(got)-1] != 47 || slices.Contains(got, 49) {
		t.Errorf("SectionTimesteps(50, fast27) = %v: want 27 timesteps ending at 47, without 49", got)
	}
	for _, T := range []int{1, 3, 30, 49} {
		if ts, err := SectionTimesteps(T, "fast27"); err == nil {
			t.Errorf("SectionTimesteps(%d, fast27) = %v, want an error", T, ts)
		}
	}
	for _, bad := range []string{"fast", "fast26", "Fast27x"} {
		if ts, err := SectionTimesteps(1000, bad); err == nil {
			t.Errorf("SectionTimesteps(1000, %q) = %v, want an error", bad, ts)
		}
	}
}
