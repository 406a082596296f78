// Package quality scores generated images: the Fréchet distance between
// two sets of feature vectors (Heusel et al. 2017, "GANs Trained by a Two
// Time-Scale Update Rule Converge to a Local Nash Equilibrium", the
// distance behind FID) and, for digits, the features and class readings
// of the MNIST classifier in quality/mnistclf.
//
// FID proper uses Inception-v3's 2048-d pool features on natural images;
// for MNIST this project uses the 64-d penultimate layer of its own
// classifier (quality/mnistclf, 99.15% test accuracy), so the numbers are
// comparable with each other, not with published FIDs. Always report a
// distance beside the floor measured the same way between two sets of
// real images of the same size: the estimator is biased upward by
// roughly (feature dimension)/(sample count).
package quality
