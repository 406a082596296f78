package main

import (
	"errors"

	"github.com/ddpm-go/ddpm/server"
)

// generator returns the Generator that ddpm serve runs for o, for the
// direct call, and a function releasing it.
func generator(o options) (server.Generator, func(), error) {
	if o.lab {
		return labGenerator()
	}
	if o.fake {
		f := server.NewFakeGenerator(32, 3, nil)
		f.StepDelay, f.ImageDelay = o.fakeStep, o.fakeImage
		return f, func() {}, nil
	}
	return nil, nil, errors.New("loading a model is not wired yet; use -fake")
}
