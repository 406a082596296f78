package server

import (
	"context"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium runs headless Chromium on url with extra flags and returns its
// stdout, skipping the test when Chromium is not installed.
func chromium(t *testing.T, url string, extra ...string) string {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("headless Chromium is not installed (Debian: apt-get install chromium)")
	}
	dir := t.TempDir()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		// Let the page's JavaScript run up to 30 s of virtual time
		// (generating, streaming progress, showing images) before the dump.
		"--virtual-time-budget=30000"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return string(out)
}

// TestWebPageInBrowser loads the embedded page in headless Chromium, lets it
// generate four images through /v1/jobs and the event stream, and checks
// the DOM and a screenshot for them.
func TestWebPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short")
	}
	f := NewFakeGenerator(32, 3, digits)
	f.StepDelay = time.Millisecond
	s := newTest(t, f, Options{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	url := ts.URL + "/?autorun=1&n=4&steps=10&seed=5&class=3"

	dom := chromium(t, url, "--dump-dom")
	for _, want := range []string{`<title>ddpm: done</title>`, `data-state="succeeded"`, `seed 5, class 3`, `seed 8, class 3`} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q", want)
		}
	}
	if n := strings.Count(dom, `class="generated"`); n != 4 {
		t.Errorf("%d generated images in the DOM, want 4", n)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
		return
	}

	shot := filepath.Join(t.TempDir(), "page.png")
	chromium(t, url, "--window-size=900,700", "--screenshot="+shot)
	fh, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// The fake's images are magenta (red and blue 255, green below 128),
	// shown at 128x128 CSS pixels each; nothing else on the page is.
	magenta := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r>>8 > 230 && bl>>8 > 230 && g>>8 < 140 {
				magenta++
			}
		}
	}
	t.Logf("%d magenta pixels in the %v screenshot", magenta, b.Size())
	if want := 4 * 120 * 120; magenta < want {
		t.Errorf("screenshot has %d magenta pixels, want >= %d (four 128x128 images)", magenta, want)
	}
}

// TestWebPageNeedsKey: behind an API key the page still loads and says
// that it needs the key.
func TestWebPageNeedsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short")
	}
	s := newTest(t, nil, Options{APIKey: "k"})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	dom := chromium(t, ts.URL+"/?autorun=1", "--dump-dom")
	if !strings.Contains(dom, `data-state="error"`) || !strings.Contains(dom, "API key") || strings.Contains(dom, `class="generated"`) {
		t.Errorf("DOM:\n%s", dom)
	}
}
