package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/ddpm-go/ddpm/server"
)

// A server over a Generator, here the test fake (a real one wraps a
// diffusion model), answering an OpenAI-style image request.
func ExampleNew() {
	gen := server.NewFakeGenerator(32, 1, []string{"zero", "one", "two"})
	srv, err := server.New(gen, server.Options{MaxBatch: 8, QueueSize: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	body := `{"prompt": "a handwritten two", "n": 2, "steps": 10, "seed": 7}`
	resp, err := http.Post(ts.URL+"/v1/images/generations", "application/json", strings.NewReader(body))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var out server.ImageResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range out.Data {
		b, _ := base64.StdEncoding.DecodeString(d.B64JSON)
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("seed %d, class %d: %v PNG\n", d.Seed, *d.ClassLabel, img.Bounds().Size())
	}
	// Output:
	// seed 7, class 2: (32,32) PNG
	// seed 8, class 2: (32,32) PNG
}
